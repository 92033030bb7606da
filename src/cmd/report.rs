//! `safetally report`: link, count, suppress and publish a window.

use std::path::PathBuf;

use safetally::report::output::headlines;
use safetally::report::{Config, build, publish};
use safetally::store::Store;

/// Link the store's drops of a window into persons and write the report:
/// tables, summary, report.md, report.html and manifest.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    window: super::Window,
    /// Folder for the report (new, or empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Settings (TOML): title, min_count, min_denominator, publish_zeros,
    /// queries (a folder of extra .sql figures).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Replace the report folder if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let store = Store::open(&args.window.store)?;
    let config = match &args.config {
        Some(p) => Config::read(p)?,
        None => Config::default(),
    };
    let bar = super::spinner(format!(
        "reading, linking and counting {} to {}",
        args.window.from, args.window.to
    ));
    let report = build(&store, args.window.from, args.window.to, config)?;
    bar.set_message("writing and auditing the report");
    let t = std::time::Instant::now();
    let out = publish(&store, &report, &args.out, args.force)?;
    safetally::report::input::trace("write and audit", t);
    bar.finish_and_clear();
    for h in headlines(&report) {
        println!("{h}");
    }
    println!(
        "report for {} to {} ({} drops, {} tables) in {}: report.html, report.md, \
         summary.json, tables/, manifest.json",
        report.from,
        report.to,
        report.inputs.len(),
        report.tables.len(),
        out.display()
    );
    Ok(0)
}
