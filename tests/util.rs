//! Helpers: a temporary folder per test, the binary, and drop reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, BooleanArray, FixedSizeBinaryArray, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use safetally::schema::Form;

/// One test's world: a temporary folder and the safetally binary.
pub struct World {
    pub dir: tempfile::TempDir,
}

/// What a run printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl World {
    pub fn new() -> Self {
        World {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_safetally"));
        c.current_dir(self.dir.path())
            .env_remove("SAFETALLY_KEY_FILE");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        finish(self.cmd().args(args).output().expect("the binary runs"))
    }

    /// Makes `key` in the folder and returns its path.
    pub fn key(&self) -> PathBuf {
        self.run(&["keygen", "--out", "key"]).ok();
        self.path("key")
    }

    /// A task-force key made from `seed` (not random), in `key`: for a
    /// test whose outcome depends on the encodings' random flips.
    pub fn fixed_key(&self, seed: u8) -> PathBuf {
        safetally::key::TaskForceKey::from_bytes([seed; 32])
            .write_new(&self.path("key"))
            .unwrap();
        self.path("key")
    }

    /// Pseudonymises screening files for NGO `org`, period 2018-03.
    pub fn pseudonymise(&self, org: &str, extra: &[&str], inputs: &[&str]) -> Run {
        let mut args = pseudonymise_args(org);
        args.extend(extra);
        args.extend(inputs);
        self.run(&args)
    }
}

/// `pseudonymise` for screening, period 2018-03, key `key`, into `out`.
pub fn pseudonymise_args(org: &str) -> Vec<&str> {
    vec![
        "pseudonymise",
        "--form",
        "screening",
        "--org",
        org,
        "--period",
        "2018-03",
        "--key",
        "key",
        "--out",
        "out",
    ]
}

pub fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The screening form's header, from the library's schema.
pub fn screening_header() -> String {
    safetally::schema::Form::Screening
        .schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A screening row from a few named values; other columns blank.
pub fn screening_row(values: &[(&str, &str)]) -> String {
    safetally::schema::Form::Screening
        .schema()
        .columns
        .iter()
        .map(|c| {
            values
                .iter()
                .find(|(k, _)| *k == c.name)
                .map(|(_, v)| csv_quote(v))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn csv_quote(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// A drop read back with the parquet crate: metadata and batches.
pub struct DropData {
    pub meta: BTreeMap<String, String>,
    pub batch: RecordBatch,
}

impl DropData {
    pub fn read(path: &Path) -> Self {
        let file = std::fs::File::open(path).expect("drop exists");
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
        let meta = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        let schema = builder.schema().clone();
        let mut batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        assert!(batches.len() <= 1, "test drops fit in one batch");
        let batch = batches
            .pop()
            .unwrap_or_else(|| RecordBatch::new_empty(schema));
        DropData { meta, batch }
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn column<T: Array + 'static>(&self, name: &str) -> &T {
        self.batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .as_any()
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("column {name} has another type"))
    }

    pub fn key(&self, column: &str, row: usize) -> Option<Vec<u8>> {
        let a = self.column::<FixedSizeBinaryArray>(column);
        a.is_valid(row).then(|| a.value(row).to_vec())
    }

    pub fn text(&self, column: &str, row: usize) -> Option<String> {
        let a = self.column::<StringArray>(column);
        a.is_valid(row).then(|| a.value(row).to_string())
    }

    pub fn flag(&self, column: &str, row: usize) -> Option<bool> {
        let a = self.column::<BooleanArray>(column);
        a.is_valid(row).then(|| a.value(row))
    }
}

/// Rewrites a drop to `dst` with its metadata (full keys, `safetally.`
/// prefix included) and its batch edited: for making drops that lie. A drop
/// that carried a content digest gets the digest of what it now holds, as
/// a careless or dishonest writer would stamp it (damage on the way is
/// another test's matter).
pub fn rewrite_drop(
    src: &Path,
    dst: &Path,
    edit_meta: impl FnOnce(&mut BTreeMap<String, String>),
    edit_batch: impl FnOnce(RecordBatch) -> RecordBatch,
) {
    use parquet::file::metadata::KeyValue;
    use safetally::digest::{ContentDigest, DIGEST_KEY};
    let d = DropData::read(src);
    let mut meta = d.meta.clone();
    let stamped = meta.remove(DIGEST_KEY).is_some();
    edit_meta(&mut meta);
    // A copy made to stand for an older format carries no digest.
    let stamped = stamped
        && safetally::drop::has_digest(
            meta.get("safetally.format_version")
                .map_or("", String::as_str),
        );
    let batch = edit_batch(d.batch);
    let mut kv: Vec<KeyValue> = meta
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let created_by = "a test's writer";
    if stamped {
        let mut digest = ContentDigest::new(batch.num_columns());
        digest.update(&batch).unwrap();
        let pairs: Vec<(String, Option<String>)> = meta
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let digest = digest
            .finish(&batch.schema(), Some(created_by), &pairs)
            .unwrap();
        kv.push(KeyValue::new(DIGEST_KEY.to_string(), digest));
    }
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .set_created_by(created_by.to_string())
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .set_offset_index_disabled(true)
        .build();
    let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let f = std::fs::File::create(dst).unwrap();
    let mut wr =
        parquet::arrow::ArrowWriter::try_new_with_options(f, batch.schema(), options).unwrap();
    wr.write(&batch).unwrap();
    wr.close().unwrap();
}

/// A task force in a temporary folder: a key (`key` in the folder, and in
/// memory) and drops made in-process with the library.
pub struct Fleet {
    pub w: World,
    pub key: safetally::key::TaskForceKey,
}

impl Fleet {
    pub fn new() -> Self {
        let w = World::new();
        let key = safetally::key::TaskForceKey::generate().unwrap();
        key.write_new(&w.path("key")).unwrap();
        Fleet { w, key }
    }

    /// A screening drop for `org` and `period` with `rows` people, made
    /// in `made/TAG/`; `tag` also varies the case references.
    pub fn drop(&self, org: &str, period: &str, rows: usize, tag: &str) -> PathBuf {
        let day = format!("{period}-01");
        let rows: Vec<Vec<(String, String)>> = (0..rows)
            .map(|i| {
                [
                    ("case_ref", format!("{tag}-{org}-{i}")),
                    ("screening_date", day.clone()),
                    ("family_name", format!("Family{i}")),
                    ("given_name", "Ana".into()),
                    ("date_of_birth", "1991".into()),
                    ("sex", "f".into()),
                    ("nationality", "IDN".into()),
                    ("outcome", "pending".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            })
            .collect();
        self.drop_of(Form::Screening, org, period, tag, &rows)
    }

    /// A drop of `form` from rows given as (column, value) pairs; other
    /// columns blank. Made in `made/TAG/`.
    pub fn drop_of(
        &self,
        form: Form,
        org: &str,
        period: &str,
        tag: &str,
        rows: &[Vec<(String, String)>],
    ) -> PathBuf {
        use safetally::pseudonymise::Period;
        use safetally::pseudonymise::files::Job;
        let p: Period = period.parse().unwrap();
        let columns = &form.schema().columns;
        let mut csv = columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
            + "\n";
        for r in rows {
            let line: Vec<String> = columns
                .iter()
                .map(|c| {
                    r.iter()
                        .find(|(k, _)| *k == c.name)
                        .map(|(_, v)| csv_quote(v))
                        .unwrap_or_default()
                })
                .collect();
            csv.push_str(&line.join(","));
            csv.push('\n');
        }
        let raw = self.w.write(
            &format!("raw/{tag}/{}_{org}_{period}.csv", form.code()),
            csv,
        );
        let job = Job {
            form,
            org: org.to_string(),
            period: p,
            out_dir: self.w.path(&format!("made/{tag}")),
            allow_rejects: false,
            force: false,
            inputs: vec![raw],
            today: chrono::Utc::now().date_naive(),
        };
        job.run(&self.key)
            .unwrap()
            .drop
            .expect("a valid file makes a drop")
    }
}

/// The ledger's entries as JSON values.
pub fn ledger(store: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(store.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every file under a folder, relative, sorted, with its bytes.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = format!("{rel}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &format!("{name}/"), out);
            } else {
                out.push((name, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}
