//! `safetally keygen --out FILE`: a new task-force key.

use std::path::PathBuf;

use safetally::key::TaskForceKey;

/// Make a new task-force key (for the key custodian).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the key (mode 0600; never overwrites).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let key = TaskForceKey::generate()?;
    key.write_new(&args.out)?;
    eprintln!(
        "wrote a new task-force key to {}. Hand it to NGOs out of band; never e-mail it \
         with the drops.",
        args.out.display()
    );
    println!("{}", key.fingerprint());
    Ok(0)
}
