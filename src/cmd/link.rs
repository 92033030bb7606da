//! `safetally link`: how the records of a window were linked into persons,
//! one row per record, and the linkage's statistics.

use std::path::PathBuf;

use safetally::Error;
use safetally::report::trace::{stats_text, write_trace};
use safetally::report::{Config, link_window};
use safetally::store::Store;

/// Link the store's drops of a window into persons, as `report` does, and
/// write one row per record (drop SHA-256, row in the drop, person, how it
/// was linked) or print the linkage's statistics.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    window: super::Window,
    /// Parquet file of one row per record: form, org, period, drop_sha256,
    /// drop_row (0 for a drop's first row; drops keep the input file's row
    /// order, rejected rows left out), person_id, link (exact, fuzzy or
    /// alone) and score (match weight of the record's strongest fuzzy link).
    #[arg(long, value_name = "FILE.parquet")]
    out: Option<PathBuf>,
    /// Print cluster sizes, exact and fuzzy link counts and weight
    /// histograms.
    #[arg(long)]
    stats: bool,
    /// The report settings (TOML) whose `fuzzy_linkage` applies.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    // Every flag is checked before the store is read or a file opened.
    if args.out.is_none() && !args.stats {
        return Err(Error::Usage("give --out FILE.parquet, --stats, or both".into()).into());
    }
    if let Some(out) = &args.out {
        if out.exists() && !args.force {
            return Err(Error::Usage(format!(
                "{} already exists: use --force to replace it",
                out.display()
            ))
            .into());
        }
        if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(
                Error::Usage(format!("the folder {} does not exist", dir.display())).into(),
            );
        }
    }
    let config = match &args.config {
        Some(p) => Config::read(p)?,
        None => Config::default(),
    };
    let store = Store::open(&args.window.store)?;
    let bar = super::spinner(format!(
        "reading and linking {} to {}",
        args.window.from, args.window.to
    ));
    let links = link_window(
        &store,
        args.window.from,
        args.window.to,
        config.fuzzy_linkage,
        &config.fuzzy_params(),
    )?;
    if let Some(out) = &args.out {
        bar.set_message(format!("writing {}", out.display()));
        write_trace(out, &links)?;
        bar.finish_and_clear();
        let rows: usize = links.iter().map(|l| l.trace.person.len()).sum();
        eprintln!("{rows} records traced in {}", out.display());
    } else {
        bar.finish_and_clear();
    }
    if args.stats {
        print!("{}", stats_text(&links));
    }
    Ok(0)
}
