//! `safetally audit REPORT_DIR`: what a reader can work out of a report.

use std::io::Write;
use std::path::PathBuf;

use safetally::audit::{Finding, audit, earlier_cells, read_report, report_window};
use safetally::store::Store;

/// Check a published report as an attacker would: for every suppressed
/// count, the range a reader who knows the method can still believe, from
/// the published tables alone (and, with --store, every release the store
/// records over a window nested with this one).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The report folder (with manifest.json and tables/).
    #[arg(value_name = "REPORT_DIR")]
    report: PathBuf,
    /// Also compare with the releases this store records.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Narrow every range down to its exact ends (slower on large reports;
    /// without it, a range already shown wide enough by solutions found is
    /// printed as "or wider").
    #[arg(long)]
    exact: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let (tables, mut params) = read_report(&args.report)?;
    params.exact = args.exact;
    let earlier = match &args.store {
        Some(dir) => {
            let store = Store::open(dir)?;
            let (from, to) = report_window(&args.report)?;
            earlier_cells(&store.state()?, &store, from, to)?
        }
        None => Vec::new(),
    };
    let bar = super::spinner("auditing every withheld count");
    let a = audit(&tables, &params, &earlier);
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    let show = |f: &Finding| {
        let high = f.high.map_or("unbounded".to_string(), |h| h.to_string());
        format!(
            "{} {} [{}]: {} to {}{}{}",
            if f.failure.is_some() { "FAIL" } else { "ok  " },
            f.table,
            f.labels.join(", "),
            f.low,
            high,
            if f.exact { "" } else { " or wider" },
            f.failure
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    };
    for d in &a.disclosed {
        writeln!(out, "FAIL {d}")?;
    }
    for d in &a.differences {
        writeln!(out, "FAIL {d}")?;
    }
    for f in &a.cells {
        writeln!(out, "{}", show(f))?;
    }
    for f in &a.sums {
        writeln!(out, "{} (sum of {} suppressed cells)", show(f), f.cells)?;
    }
    let failed = a.disclosed.len()
        + a.differences.len()
        + a.cells
            .iter()
            .chain(&a.sums)
            .filter(|f| f.failure.is_some())
            .count();
    writeln!(
        out,
        "{} suppressed cells, {} sums checked (min_count {}, protection {}, zeros {}): {}",
        a.cells.len() + a.disclosed.len(),
        a.sums.len(),
        params.min_count,
        params.protection,
        if params.zeros_published {
            "published"
        } else {
            "suppressed"
        },
        if failed == 0 {
            "PASS".to_string()
        } else {
            format!("FAIL ({failed} findings)")
        }
    )?;
    Ok(if failed == 0 { 0 } else { 1 })
}
