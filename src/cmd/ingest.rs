//! `safetally ingest --store DIR DROP...`: verify drops and file them.

use std::io::Write;
use std::path::PathBuf;

use safetally::store::ingest::{expand, ingest};
use safetally::store::ledger::Outcome;
use safetally::store::{Offered, Store, recover};

/// Verify drops and file them in a store, one ledger entry each.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store (made by `safetally store init`).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// Refuse at once, instead of waiting, when another command is using
    /// the store.
    #[arg(long)]
    no_wait: bool,
    /// Drop files, or folders holding them (their .parquet files are taken
    /// in name order).
    #[arg(required = true, value_name = "DROP")]
    drops: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let store = Store::open(&args.store)?;
    let sources = expand(&args.drops)?;
    let _lock = store.lock("ingest", !args.no_wait)?;
    for done in recover(&store)? {
        eprintln!("recovered: {done}");
    }
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let bar = indicatif::ProgressBar::new(sources.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "ingesting {bar:40} {human_pos}/{human_len} drops ({eta} left)",
        )
        .expect("valid template"),
    );
    let offered = ingest(&store, &sources, |o| {
        bar.inc(1);
        if failed.is_none()
            && let Err(e) = bar.suspend(|| print_one(&mut out, o))
        {
            failed = Some(e);
        }
    })?;
    bar.finish_and_clear();
    if let Some(e) = failed {
        return Err(e.into());
    }
    let count = |k: Outcome| offered.iter().filter(|o| o.entry.outcome == k).count();
    let superseded_older = offered
        .iter()
        .flat_map(|o| &o.also)
        .filter(|e| e.outcome == Outcome::Superseded)
        .count();
    let refused = count(Outcome::Refused);
    writeln!(
        out,
        "{} offered: {} accepted, {} duplicate, {} filed as superseded, {} refused; \
         {superseded_older} earlier drop(s) superseded",
        offered.len(),
        count(Outcome::Accepted),
        count(Outcome::Duplicate),
        count(Outcome::Superseded),
        refused
    )?;
    if refused > 0 {
        eprintln!(
            "{refused} drop(s) refused: the reasons are above and in {}; \
             see docs/secretariat.md for what each means",
            store.ledger_path().display()
        );
        return Ok(1);
    }
    Ok(0)
}

fn print_one(out: &mut impl Write, o: &Offered) -> std::io::Result<()> {
    let e = &o.entry;
    let what = match (&e.form, &e.org, &e.period) {
        (Some(f), Some(org), Some(p)) => format!("{f} {org} {p}"),
        _ => "-".to_string(),
    };
    for a in o.also.iter().filter(|a| a.outcome == Outcome::Epoch) {
        writeln!(
            out,
            "epoch       key epoch {} starts: drops must carry key {}",
            a.epoch.unwrap_or(0),
            a.fingerprint.as_deref().unwrap_or("")
        )?;
    }
    match e.outcome {
        Outcome::Refused => writeln!(
            out,
            "refused     {}  {what}: {}",
            o.source.display(),
            e.reason.as_deref().unwrap_or("")
        )?,
        k => writeln!(
            out,
            "{:<11} {}  {what}  {} rows{}",
            k.as_str(),
            o.source.display(),
            e.rows.unwrap_or(0),
            match k {
                Outcome::Duplicate => " (already filed; nothing changed)".to_string(),
                Outcome::Superseded =>
                    " (older than the drop already filed; kept, not current)".to_string(),
                _ => String::new(),
            } + if e.content_sha256.is_none() && k != Outcome::Duplicate {
                " (content not checked: an older drop format without a digest)"
            } else {
                ""
            }
        )?,
    }
    for a in o.also.iter().filter(|a| a.outcome == Outcome::Superseded) {
        writeln!(
            out,
            "superseded  {}  (replaced by the drop above; kept)",
            a.path.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}
