//! `safetally check DROP...`: verify drop files, and print what an NGO and
//! the secretariat compare over the phone when in doubt (the file's SHA-256).

use std::io::Write;
use std::path::PathBuf;

use super::load_key;
use safetally::key::KEY_FILE_ENV;

/// Verify drops: content digest, schema, metadata, no identity column, row
/// count, and the key fingerprint when a key is given. Prints each drop's
/// SHA-256, to compare with the secretariat's.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also require the drops to be made with this key.
    #[arg(long, value_name = "FILE", env = KEY_FILE_ENV, hide_env_values = true)]
    key: Option<PathBuf>,
    /// Drop files.
    #[arg(required = true, value_name = "DROP")]
    drops: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let fingerprint = match &args.key {
        Some(p) => Some(load_key(p)?.fingerprint()),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut bad = 0;
    for path in &args.drops {
        match safetally::drop::check(path, fingerprint.as_deref()) {
            Ok(c) => {
                let m = c.meta;
                let content = match &m.content_sha256 {
                    Some(_) => "verified".to_string(),
                    None => format!("unchecked (format {} has no digest)", m.format_version),
                };
                writeln!(
                    out,
                    "ok  {}  form={} org={} period={} rows={} rejected={} key={} \
                     sha256={} content={content}",
                    path.display(),
                    m.form,
                    m.org,
                    m.period,
                    m.rows,
                    m.rejected_rows,
                    m.key_fingerprint,
                    c.file_sha256,
                )?;
            }
            Err(e) => {
                bad += 1;
                writeln!(out, "BAD {e}")?;
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} drops failed the check", args.drops.len());
        return Ok(1);
    }
    Ok(0)
}
