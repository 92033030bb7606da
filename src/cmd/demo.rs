//! `safetally demo`: the whole flow on built-in synthetic data.

use std::path::PathBuf;

/// Make a key and synthetic NGO data, then pseudonymise every file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the demo (created; must be empty or absent).
    #[arg(long, value_name = "DIR", default_value = "demo")]
    dir: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    Ok(0)
}
