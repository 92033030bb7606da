//! `safetally template FORM [--xlsx FILE]`: the blank form.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use safetally::schema::Form;

/// Print a form's blank CSV header, or write a blank Excel template.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The form: screening or self_assessment.
    form: Form,
    /// Write an Excel template to FILE instead (refuses to overwrite).
    #[arg(long, value_name = "FILE")]
    xlsx: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.xlsx {
        None => {
            let names: Vec<&str> = args
                .form
                .schema()
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            writeln!(std::io::stdout(), "{}", names.join(","))?;
        }
        Some(path) => {
            if path.exists() {
                return Err(safetally::Error::Usage(format!(
                    "{} already exists: choose another file name",
                    path.display()
                ))
                .into());
            }
            safetally::template::write_xlsx(args.form, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(0)
}
