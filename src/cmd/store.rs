//! `safetally store init|verify|status|rotate`: the secretariat's store.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use safetally::Error;
use safetally::drop::is_fingerprint;
use safetally::pseudonymise::Period;
use safetally::schema::Form;
use safetally::store::ledger::{Entry, Ledger, Outcome};
use safetally::store::status::matrix;
use safetally::store::verify::verify;
use safetally::store::{Store, now, recover};

use super::load_key;

/// Create, check and follow the secretariat's store of drops.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create a store in a new or empty folder.
    Init {
        /// The folder.
        dir: PathBuf,
        /// Member list (TOML: `NGO07 = "Name"` lines under `[members]`);
        /// drops from other orgs are then refused.
        #[arg(long, value_name = "FILE")]
        members: Option<PathBuf>,
        /// The task-force key's fingerprint, when known: drops made with
        /// another key are refused from the start. Without it the first
        /// drop accepted sets it.
        #[arg(long, value_name = "FINGERPRINT")]
        fingerprint: Option<String>,
    },
    /// Check every file against the ledger, and the ledger itself.
    Verify {
        /// The store.
        dir: PathBuf,
    },
    /// The submission matrix: NGOs by month, and what is missing.
    Status {
        /// The store.
        dir: PathBuf,
        /// Only this form (screening or self_assessment).
        #[arg(long)]
        form: Option<Form>,
        /// First month shown (default: the earliest drop).
        #[arg(long, value_name = "YYYY-MM")]
        from: Option<Period>,
        /// Last month shown (default: the latest drop).
        #[arg(long, value_name = "YYYY-MM")]
        to: Option<Period>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start a new key epoch: from now on drops must carry the new key's
    /// fingerprint; drops made with earlier keys are refused.
    Rotate {
        /// The store.
        dir: PathBuf,
        /// The new key's fingerprint.
        #[arg(
            long,
            value_name = "FINGERPRINT",
            conflicts_with = "key",
            required_unless_present = "key"
        )]
        fingerprint: Option<String>,
        /// The new key file (only its fingerprint is used).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.command {
        StoreCommand::Init {
            dir,
            members,
            fingerprint,
        } => {
            Store::init(&dir, members.as_deref(), fingerprint.as_deref())?;
            println!(
                "created the store {}{}",
                dir.display(),
                match &fingerprint {
                    Some(fp) => format!("; key epoch 1 is {fp}"),
                    None => "; the first drop accepted sets the key epoch".to_string(),
                }
            );
            Ok(0)
        }
        StoreCommand::Verify { dir } => {
            let store = Store::open(&dir)?;
            let _lock = store.lock("store verify", true)?;
            for done in recover(&store)? {
                eprintln!("recovered: {done}");
            }
            let bar = super::spinner("checking every filed drop against the ledger");
            let v = verify(&store)?;
            bar.finish_and_clear();
            let mut out = std::io::stdout().lock();
            for p in &v.problems {
                writeln!(out, "PROBLEM {p}")?;
            }
            let epoch = match &v.epoch {
                Some((n, fp)) => format!("key epoch {n} ({fp})"),
                None => "no key epoch yet".to_string(),
            };
            if v.problems.is_empty() {
                writeln!(
                    out,
                    "store OK: {} ledger entries, {} drops filed ({} current), {epoch}",
                    v.entries, v.filed, v.current
                )?;
                Ok(0)
            } else {
                writeln!(
                    out,
                    "store NOT OK: {} problem(s); {} ledger entries, {} drops filed",
                    v.problems.len(),
                    v.entries,
                    v.filed
                )?;
                Ok(1)
            }
        }
        StoreCommand::Status {
            dir,
            form,
            from,
            to,
            json,
        } => {
            let store = Store::open(&dir)?;
            let state = {
                let _lock = store.lock("store status", true)?;
                for done in recover(&store)? {
                    eprintln!("recovered: {done}");
                }
                store.state()?
            };
            let members = store.members()?;
            let forms: Vec<Form> = match form {
                Some(f) => vec![f],
                None => Form::ALL.to_vec(),
            };
            let matrices: Vec<_> = forms
                .into_iter()
                .map(|f| matrix(&state, members.as_ref(), f, from, to))
                .collect();
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &matrices)?;
                writeln!(out)?;
            } else {
                for (i, m) in matrices.iter().enumerate() {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    write!(out, "{}", m.render())?;
                }
            }
            Ok(0)
        }
        StoreCommand::Rotate {
            dir,
            fingerprint,
            key,
        } => {
            let fp = match (fingerprint, key) {
                (Some(fp), _) => fp,
                (None, Some(k)) => load_key(&k)?.fingerprint(),
                (None, None) => unreachable!("clap requires one"),
            };
            if !is_fingerprint(&fp) {
                return Err(Error::Usage(format!(
                    "'{fp}' is not a key fingerprint (like 8e1c-c37f-daa3-46bd)"
                ))
                .into());
            }
            let store = Store::open(&dir)?;
            let _lock = store.lock("store rotate", true)?;
            for done in recover(&store)? {
                eprintln!("recovered: {done}");
            }
            let mut ledger = Ledger::read(&store.ledger_path())?;
            let state = safetally::store::State::replay(ledger.clone());
            if let Some((n, _, _)) = state.epochs.iter().find(|(_, old, _)| *old == fp) {
                return Err(Error::Usage(format!(
                    "key {fp} was already epoch {n} of this store: a new epoch needs a new key"
                ))
                .into());
            }
            let next = state.epoch().map_or(1, |(n, _)| n + 1);
            let mut e = Entry::new(Outcome::Epoch);
            e.epoch = Some(next);
            e.fingerprint = Some(fp.clone());
            e.reason = Some("started by store rotate".to_string());
            ledger.append(&store.ledger_path(), vec![e], &now())?;
            println!(
                "key epoch {next} starts: from now on drops must be made with key {fp}; \
                 drops made with earlier keys are refused"
            );
            Ok(0)
        }
    }
}
