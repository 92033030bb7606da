//! Helpers: a temporary folder per test, the binary, and drop reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, BooleanArray, FixedSizeBinaryArray, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

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
