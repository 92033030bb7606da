//! `safetally demo`: the whole NGO-side flow on built-in synthetic data.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use safetally::demo::{make_drops, members_toml};
use safetally::drop::write_text_atomically;
use safetally::key::TaskForceKey;
use safetally::report::output::headlines;
use safetally::report::{Config, build, publish};
use safetally::store::Store;
use safetally::store::ingest::ingest;
use safetally::store::ledger::Outcome;
use safetally::synth::PilotSpec;

/// Make a key and synthetic data for 27 NGOs (Aug 2017 - Jun 2018), then
/// pseudonymise every file into drops, ingest them into a store, and make
/// the report.
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
    let drops_dir = dir.join("drops");
    eprintln!(
        "made a task-force key ({}); writing raw files for {} NGOs in {}",
        key.fingerprint(),
        spec.orgs,
        raw_dir.display()
    );
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("pseudonymising {bar:40} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let made = make_drops(&spec, &key, &raw_dir, &drops_dir, |total, path| {
        bar.set_length(total as u64);
        bar.set_message(path.display().to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let t = &made.generated.truth;
    println!(
        "pseudonymised {} raw files into {} drops in {} ({} rows, none rejected)",
        made.generated.files.len(),
        made.drops.len(),
        drops_dir.display(),
        made.rows
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

    // The secretariat's side: a store with the member list and the key's
    // fingerprint, and every drop ingested.
    let members = dir.join("members.toml");
    write_text_atomically(&members, &members_toml(&made.generated))?;
    let store_dir = dir.join("store");
    let store = Store::init(&store_dir, Some(&members), Some(&key.fingerprint()))?;
    let lock = store.lock("demo", false)?;
    let bar = ProgressBar::new(made.drops.len() as u64).with_style(
        ProgressStyle::with_template("ingesting {bar:40} {pos}/{len}").expect("valid template"),
    );
    let offered = ingest(&store, &made.drops, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let accepted = offered
        .iter()
        .filter(|o| o.entry.outcome == Outcome::Accepted)
        .count();
    if accepted != made.drops.len() {
        anyhow::bail!(
            "only {accepted} of {} drops were accepted: see {}",
            made.drops.len(),
            store.ledger_path().display()
        );
    }
    println!(
        "ingested {accepted} drops into the store {} (ledger: {})",
        store_dir.display(),
        store.ledger_path().display()
    );
    drop(lock);

    // The report over the whole pilot.
    let report = build(&store, spec.from, spec.to, Config::default())?;
    let report_dir = dir.join("report");
    publish(&store, &report, &report_dir, false)?;
    println!();
    for h in headlines(&report) {
        println!("{h}");
    }
    println!();
    println!(
        "the report is in {}: open report.html in a browser; report.md, summary.json, \
         tables/ and manifest.json are beside it",
        report_dir.display()
    );
    println!(
        "no name, birth date or passport number left the raw files. Next:\n  \
         safetally check --key {} {}/*.parquet\n  \
         safetally store status {}\n  \
         safetally store verify {}",
        key_path.display(),
        drops_dir.display(),
        store_dir.display(),
        store_dir.display()
    );
    Ok(0)
}
