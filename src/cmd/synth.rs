//! `safetally synth`: a synthetic workload of any size, as drops (already
//! pseudonymised, as NGOs' `pseudonymise` writes them) or raw files.
//! Prints counts only, never a name, birth date or passport number.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use safetally::key::{KEY_FILE_ENV, TaskForceKey};
use safetally::pseudonymise::Period;
use safetally::workload::{DROPS_DIR, Output, RAW_DIR, TRUTH_FILE, WorkloadSpec, generate};

/// Make a synthetic workload of any size: persons screened by several
/// organisations over several months, written differently by each, as
/// drops (pseudonymised, ready to ingest) or raw CSV files (--raw).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Distinct persons screened (about 1.2 screening records each).
    #[arg(long, value_parser = parse_count)]
    persons: usize,
    /// Distinct self-assessment respondents [default: a tenth of --persons].
    #[arg(long, value_parser = parse_count)]
    respondents: Option<usize>,
    /// Member organisations (NGO01, NGO02, ...).
    #[arg(long, default_value_t = 27)]
    orgs: usize,
    /// Months in the window.
    #[arg(long, default_value_t = 12)]
    months: u32,
    /// First month of the window.
    #[arg(long, value_name = "YYYY-MM", default_value = "2025-01")]
    from: Period,
    /// Seed: the same seed (and key) gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The task-force key file for the drops. Without it (and without
    /// SAFETALLY_KEY_FILE) a new key is made in DIR/task-force.key.
    #[arg(long, value_name = "FILE", env = KEY_FILE_ENV, hide_env_values = true)]
    key: Option<PathBuf>,
    /// Write the raw CSV files (DIR/raw/ORG/FORM_PERIOD.csv) that NGOs would
    /// pseudonymise, instead of drops.
    #[arg(long)]
    raw: bool,
    /// Output folder: drops in DIR/drops (or raw files in DIR/raw) and the
    /// counts in DIR/truth.json.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Replace the workload already in DIR.
    #[arg(long)]
    force: bool,
}

/// A count, `_` allowed as a separator (`10_000_000`).
fn parse_count(s: &str) -> Result<usize, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let today = chrono::Utc::now().date_naive();
    let spec = WorkloadSpec {
        seed: args.seed,
        persons: args.persons,
        respondents: args.respondents.unwrap_or(args.persons / 10),
        orgs: args.orgs,
        from: args.from,
        months: args.months,
    };
    // Every flag is checked before a file is made.
    spec.validate(today)?;
    let key = if args.raw {
        None
    } else {
        Some(match &args.key {
            Some(path) => super::load_key(path)?,
            None => {
                let path = args.dir.join("task-force.key");
                if path.exists() {
                    super::load_key(&path)?
                } else {
                    std::fs::create_dir_all(&args.dir)?;
                    let key = TaskForceKey::generate()?;
                    key.write_new(&path)?;
                    eprintln!(
                        "made a new task-force key {} (fingerprint {}): give it with --key \
                         to pseudonymise raw files or make more drops under the same key",
                        path.display(),
                        key.fingerprint()
                    );
                    key
                }
            }
        })
    };
    let output = match &key {
        Some(key) => Output::Drops { key, today },
        None => Output::Raw,
    };
    let estimate = (spec.persons as f64 * 1.22 + spec.respondents as f64 * 1.07) as u64;
    let bar = ProgressBar::new(estimate).with_style(
        ProgressStyle::with_template(
            "{msg} {bar:40} {human_pos}/{human_len} records ({per_sec}, {eta} left)",
        )
        .expect("valid template"),
    );
    bar.set_message(if args.raw {
        "writing raw files"
    } else {
        "writing drops"
    });
    let truth = generate(&spec, &output, &args.dir, args.force, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let (what, sub) = if args.raw {
        ("raw files", RAW_DIR)
    } else {
        ("drops", DROPS_DIR)
    };
    println!(
        "wrote {} {what} for {} organisations, {} to {}, in {}",
        truth.files,
        truth.orgs,
        truth.from,
        truth.to,
        args.dir.join(sub).display()
    );
    println!(
        "screening: {} records of {} persons, {} identified; self-assessment: {} records of \
         {} respondents",
        truth.screening_records,
        truth.screening_persons,
        truth.identified_persons,
        truth.self_assessment_records,
        truth.respondents
    );
    if let Some(fp) = &truth.key_fingerprint {
        println!("key fingerprint {fp}");
    }
    println!("counts in {}", args.dir.join(TRUTH_FILE).display());
    Ok(0)
}
