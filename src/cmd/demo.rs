//! `safetally demo`: the whole NGO-side flow on built-in synthetic data.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use safetally::key::TaskForceKey;
use safetally::pseudonymise::files::Job;
use safetally::synth::{PilotSpec, generate};

/// Make a key and synthetic data for 27 NGOs (Aug 2017 - Jun 2018), then
/// pseudonymise every file into drops.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the demo (created; must be empty or absent).
    #[arg(long, value_name = "DIR", default_value = "demo")]
    dir: PathBuf,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = PilotSpec::default().seed)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let dir = &args.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(safetally::Error::Usage(format!(
            "{} is not empty: give another folder with --dir, or remove it",
            dir.display()
        ))
        .into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join("task-force.key");
    let key = TaskForceKey::generate()?;
    key.write_new(&key_path)?;
    let spec = PilotSpec {
        seed: args.seed,
        ..PilotSpec::default()
    };
    let raw_dir = dir.join("raw");
    let generated = generate(&spec, &raw_dir)?;
    eprintln!(
        "made a task-force key ({}) and {} raw files for {} NGOs in {}",
        key.fingerprint(),
        generated.files.len(),
        spec.orgs,
        raw_dir.display()
    );

    let drops = dir.join("drops");
    let bar = ProgressBar::new(generated.files.len() as u64).with_style(
        ProgressStyle::with_template("pseudonymising {bar:40} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let today = chrono::Utc::now().date_naive();
    let (mut rows, mut rejected) = (0, 0);
    for f in &generated.files {
        bar.set_message(f.path.display().to_string());
        let job = Job {
            form: f.form,
            org: f.org.clone(),
            period: f.period,
            out_dir: drops.clone(),
            allow_rejects: false,
            force: false,
            inputs: vec![raw_dir.join(&f.path)],
            today,
        };
        let outcome = job.run(&key)?;
        if outcome.drop.is_none() {
            anyhow::bail!(
                "{} was refused ({} rows rejected): the demo data should be valid",
                f.path.display(),
                outcome.rejected_rows
            );
        }
        rows += outcome.rows;
        rejected += outcome.rejected_rows;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let t = &generated.truth;
    println!(
        "pseudonymised {} files into {} drops in {} ({rows} rows, {rejected} rejected)",
        generated.files.len(),
        generated.files.len(),
        drops.display()
    );
    println!(
        "screening: {} records of {} people from {} NGOs, {} identified; \
         self-assessment: {} records of {} respondents",
        t.screening_records,
        t.screened_persons,
        t.screening_orgs,
        t.identified_persons,
        t.self_assessment_records,
        t.respondents
    );
    println!(
        "no name, birth date or passport number left the raw files: check a drop with\n  \
         safetally check --key {} {}/*.parquet",
        key_path.display(),
        drops.display()
    );
    Ok(0)
}
