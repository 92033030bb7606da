//! The pseudonymise job: raw files in, one drop (or a rejects report) out.
//! Shared by the `pseudonymise` and `demo` commands.
//!
//! Nothing is half-written: the drop and the rejects report are each
//! written to a temporary file and renamed. No identity value is written.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::{Period, Problem, Pseudonymiser, Source};
use crate::drop::{self, DropMeta, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::key::TaskForceKey;
use crate::pseudonymise::normalise::NORMALISER_VERSION;
use crate::raw;
use crate::schema::Form;

/// What to pseudonymise and where to.
#[derive(Debug, Clone)]
pub struct Job {
    /// The form of every input.
    pub form: Form,
    /// Organisation code (validated, upper-case).
    pub org: String,
    /// The month the drop covers.
    pub period: Period,
    /// Folder for the drop and any rejects report.
    pub out_dir: PathBuf,
    /// Write the valid rows even when some are rejected.
    pub allow_rejects: bool,
    /// Replace an existing drop.
    pub force: bool,
    /// Raw CSV or XLSX files.
    pub inputs: Vec<PathBuf>,
    /// Today's date, bounding birth and event dates.
    pub today: NaiveDate,
}

/// What a job did.
#[derive(Debug)]
pub struct JobOutcome {
    /// The drop written, if any.
    pub drop: Option<PathBuf>,
    /// The rejects report written, if any rows were rejected.
    pub rejects_report: Option<PathBuf>,
    /// Rows in the drop (or that would have been).
    pub rows: usize,
    /// Rows rejected.
    pub rejected_rows: usize,
    /// Every problem, sorted by file and row.
    pub problems: Vec<Problem>,
}

impl Job {
    /// Where the drop goes.
    pub fn drop_path(&self) -> PathBuf {
        self.out_dir
            .join(drop::file_stem(self.form, &self.org, self.period) + ".parquet")
    }

    /// Where the rejects report goes.
    pub fn rejects_path(&self) -> PathBuf {
        self.out_dir
            .join(drop::file_stem(self.form, &self.org, self.period) + ".rejects.csv")
    }

    /// Runs the job.
    pub fn run(&self, key: &TaskForceKey) -> Result<JobOutcome> {
        self.run_with_progress(key, &|_| {})
    }

    /// Runs the job, calling `progress` with the rows of each batch coded.
    /// A panic while the raw files are read and coded (a reader's bug met
    /// by a damaged file) is an error that names no value, and leaves no
    /// drop: its temporary file is removed as the panic unwinds.
    pub fn run_with_progress(
        &self,
        key: &TaskForceKey,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<JobOutcome> {
        crate::guard::catch(|| self.run_unguarded(key, progress)).unwrap_or_else(|p| {
            Err(Error::Refused(format!(
                "reading the input met {p}: the file may be damaged. Save it again (from \
                 Excel as .xlsx or .csv) and run again, and report the error to \
                 safetally's maintainers"
            )))
        })
    }

    fn run_unguarded(
        &self,
        key: &TaskForceKey,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<JobOutcome> {
        if self.inputs.is_empty() {
            return Err(Error::Usage("no input file given".into()));
        }
        if !self.force && self.drop_path().exists() {
            return Err(Error::Usage(format!(
                "{} already exists: use --force to replace it",
                self.drop_path().display()
            )));
        }
        std::fs::create_dir_all(&self.out_dir).map_err(|e| {
            Error::io(
                format!("cannot create the folder {}", self.out_dir.display()),
                e,
            )
        })?;
        let inputs = self
            .inputs
            .iter()
            .map(|p| {
                if !p.is_file() {
                    return Err(Error::Usage(format!("{}: no such file", p.display())));
                }
                Ok(Source {
                    name: p
                        .file_name()
                        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
                    file: raw::open(p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let p = Pseudonymiser::new(key, self.form, &self.org, self.period, self.today);
        let mut meta = DropMeta {
            format_version: FORMAT_VERSION.to_string(),
            form: self.form,
            schema_version: self.form.schema().version,
            org: self.org.clone(),
            period: self.period,
            key_fingerprint: key.fingerprint(),
            normaliser_version: NORMALISER_VERSION.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            // Known once every row is coded.
            created: String::new(),
            rows: 0,
            rejected_rows: 0,
            content_sha256: None,
        };
        // The drop is written while rows are coded, to a temporary file
        // that is dropped (removed) if rows are rejected without
        // --allow-rejects.
        let (Counted(writer, _), outcome) = p.run_into(&inputs, || {
            Ok(Counted(
                drop::DropWriter::create(&self.out_dir, &meta)?,
                progress,
            ))
        })?;
        let mut result = JobOutcome {
            drop: None,
            rejects_report: None,
            rows: outcome.rows,
            rejected_rows: outcome.rejected_rows,
            problems: outcome.problems,
        };
        let rejects = self.rejects_path();
        if result.problems.is_empty() {
            // A report left by an earlier, failed run no longer applies.
            if rejects.exists() {
                std::fs::remove_file(&rejects).map_err(|e| {
                    Error::io(format!("cannot remove the old {}", rejects.display()), e)
                })?;
            }
        } else {
            write_rejects(&rejects, &result.problems)?;
            result.rejects_report = Some(rejects);
            if !self.allow_rejects {
                return Ok(result);
            }
        }
        meta.created = drop::created_now();
        meta.rows = outcome.rows as u64;
        meta.rejected_rows = outcome.rejected_rows as u64;
        result.drop = Some(writer.finish(&meta, self.force)?);
        Ok(result)
    }
}

/// A sink that reports the rows of each batch it passes on.
struct Counted<'a, S>(S, &'a (dyn Fn(u64) + Sync));

impl<S: super::BatchSink> super::BatchSink for Counted<'_, S> {
    fn write(&mut self, batch: arrow_array::RecordBatch) -> Result<()> {
        (self.1)(batch.num_rows() as u64);
        self.0.write(batch)
    }
}

/// Writes the rejects report: `file,row,column,reason`, one line a problem.
fn write_rejects(path: &Path, problems: &[Problem]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::io("cannot write the rejects report", e.into());
    w.write_record(["file", "row", "column", "reason"])
        .map_err(io)?;
    for p in problems {
        w.write_record([&p.file, &p.row.to_string(), &p.column, &p.reason])
            .map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io("cannot write the rejects report", e.into_error()))?;
    drop::write_text_atomically(
        path,
        &String::from_utf8(bytes).expect("UTF-8 in, UTF-8 out"),
    )
}
