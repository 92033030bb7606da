//! `safetally fingerprint --key FILE`: the key's fingerprint.

use super::KeyArg;

/// Print the fingerprint of a task-force key.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    key: KeyArg,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    println!("{}", args.key.load()?.fingerprint());
    Ok(0)
}
