//! `safetally pseudonymise`: one month of raw records into one drop.

use std::path::PathBuf;

use super::KeyArg;
use safetally::pseudonymise::files::Job;
use safetally::pseudonymise::{Period, parse_org};
use safetally::schema::Form;

/// Turn one month of case records (CSV or XLSX) into a pseudonymised drop.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The form: screening or self_assessment.
    #[arg(long)]
    form: Form,
    /// Your organisation's code, as given by the secretariat.
    #[arg(long)]
    org: String,
    /// The month the records cover, YYYY-MM.
    #[arg(long)]
    period: Period,
    #[command(flatten)]
    key: KeyArg,
    /// Folder for the drop (and a rejects report if rows are invalid).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write the valid rows even if some rows are invalid; the number
    /// rejected is recorded in the drop.
    #[arg(long)]
    allow_rejects: bool,
    /// Replace an existing drop for the same form, org and period.
    #[arg(long)]
    force: bool,
    /// Raw files (.csv or .xlsx).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

/// How many problems the terminal lists before pointing to the report.
const SHOWN_PROBLEMS: usize = 50;

pub fn run(args: Args) -> anyhow::Result<u8> {
    // Validate everything before reading data or writing a file.
    let org = parse_org(&args.org)?;
    let key = args.key.load()?;
    let job = Job {
        form: args.form,
        org,
        period: args.period,
        out_dir: args.out,
        allow_rejects: args.allow_rejects,
        force: args.force,
        inputs: args.inputs,
        today: chrono::Utc::now().date_naive(),
    };
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} pseudonymising: {human_pos} rows coded ({per_sec}, {elapsed})",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let outcome = job.run_with_progress(&key, &|rows| bar.inc(rows))?;
    bar.finish_and_clear();
    if !outcome.problems.is_empty() {
        eprintln!(
            "{} row(s) have problems ({} problem(s) in all):",
            outcome.rejected_rows,
            outcome.problems.len()
        );
        for p in outcome.problems.iter().take(SHOWN_PROBLEMS) {
            let column = if p.column.is_empty() {
                String::new()
            } else {
                format!(", column {}", p.column)
            };
            eprintln!("  {} row {}{}: {}", p.file, p.row, column, p.reason);
        }
        if outcome.problems.len() > SHOWN_PROBLEMS {
            eprintln!("  ... and {} more", outcome.problems.len() - SHOWN_PROBLEMS);
        }
        if let Some(r) = &outcome.rejects_report {
            eprintln!("the full list is in {}", r.display());
        }
    }
    match &outcome.drop {
        Some(path) => {
            println!(
                "wrote {} ({} rows, {} rejected, key {})",
                path.display(),
                outcome.rows,
                outcome.rejected_rows,
                key.fingerprint()
            );
            Ok(0)
        }
        None => {
            eprintln!(
                "no drop written: fix the rows above and run again, or use --allow-rejects \
                 to send the {} valid rows now",
                outcome.rows
            );
            Ok(1)
        }
    }
}
