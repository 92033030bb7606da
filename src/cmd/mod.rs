//! One module per subcommand, each with its arguments and its `run`.

mod audit;
mod check;
mod demo;
mod fingerprint;
mod ingest;
mod keygen;
mod link;
mod pseudonymise;
mod report;
mod store;
mod synth;
mod template;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use safetally::Error;
use safetally::key::{KEY_FILE_ENV, TaskForceKey};

/// A store and a window of months, as `report` and `link` take them.
#[derive(Debug, clap::Args)]
pub struct Window {
    /// The store.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// First month of the window.
    #[arg(long, value_name = "YYYY-MM")]
    from: safetally::pseudonymise::Period,
    /// Last month of the window.
    #[arg(long, value_name = "YYYY-MM")]
    to: safetally::pseudonymise::Period,
}

/// safetally: share what task-force members see without sharing who they see.
#[derive(Debug, Parser)]
#[command(name = "safetally", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Template(template::Args),
    Keygen(keygen::Args),
    Fingerprint(fingerprint::Args),
    Pseudonymise(pseudonymise::Args),
    Check(check::Args),
    Ingest(ingest::Args),
    Store(store::Args),
    Report(report::Args),
    Link(link::Args),
    Audit(audit::Args),
    Demo(demo::Args),
    Synth(synth::Args),
}

/// Runs the chosen subcommand; returns the exit code for a run that
/// finished (1 when data was refused).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Template(a) => template::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Fingerprint(a) => fingerprint::run(a),
        Command::Pseudonymise(a) => pseudonymise::run(a),
        Command::Check(a) => check::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Store(a) => store::run(a),
        Command::Report(a) => report::run(a),
        Command::Link(a) => link::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Synth(a) => synth::run(a),
    }
}

/// A spinner on stderr with the elapsed time and a message, ticking by
/// itself (for steps whose length is not known). Like every progress bar
/// here it is hidden when stderr is not a terminal, so logs and pipes get
/// only the command's own lines.
pub fn spinner(message: impl Into<std::borrow::Cow<'static, str>>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("valid template"),
    );
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Where the key comes from: `--key FILE` or the environment variable.
#[derive(Debug, clap::Args)]
pub struct KeyArg {
    /// The task-force key file (never the key itself). Defaults to the file
    /// named by SAFETALLY_KEY_FILE.
    #[arg(long, value_name = "FILE", env = KEY_FILE_ENV, hide_env_values = true)]
    key: Option<PathBuf>,
}

impl KeyArg {
    /// Loads the key, warning when its file is readable by others.
    pub fn load(&self) -> Result<TaskForceKey, Error> {
        let path = self.key.as_deref().ok_or_else(|| {
            Error::Key(format!(
                "no task-force key: give --key FILE or set {KEY_FILE_ENV} to the key file's path"
            ))
        })?;
        load_key(path)
    }
}

/// Reads a key file, warning on stderr when other users can read it.
pub fn load_key(path: &Path) -> Result<TaskForceKey, Error> {
    let key = TaskForceKey::read(path)?;
    if TaskForceKey::readable_by_others(path) {
        eprintln!(
            "warning: the key file {} can be read by other users of this computer; \
             run 'chmod 600 {}'",
            path.display(),
            path.display()
        );
    }
    Ok(key)
}
