//! The demo's steps as a library, shared by `safetally demo` and the
//! benchmarks: synthetic raw files -> drops -> a store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::key::TaskForceKey;
use crate::pseudonymise::files::Job;
use crate::schema::Form;
use crate::synth::{Generated, PilotSpec, generate};

/// What [`make_drops`] made.
#[derive(Debug)]
pub struct Drops {
    /// The synthetic data and the figures it adds up to.
    pub generated: Generated,
    /// Every drop written, in the order of `generated.files`.
    pub drops: Vec<PathBuf>,
    /// Rows written to drops.
    pub rows: usize,
}

/// Writes the synthetic raw files of `spec` into `raw_dir` and
/// pseudonymises each into a drop in `drops_dir`. `on_file` is called
/// before each file with the number of files and the file's path (for a
/// progress bar).
pub fn make_drops(
    spec: &PilotSpec,
    key: &TaskForceKey,
    raw_dir: &Path,
    drops_dir: &Path,
    mut on_file: impl FnMut(usize, &Path),
) -> Result<Drops> {
    let generated = generate(spec, raw_dir)?;
    let today = chrono::Utc::now().date_naive();
    let mut drops = Vec::with_capacity(generated.files.len());
    let mut rows = 0;
    for f in &generated.files {
        on_file(generated.files.len(), &f.path);
        let job = Job {
            form: f.form,
            org: f.org.clone(),
            period: f.period,
            out_dir: drops_dir.to_path_buf(),
            allow_rejects: false,
            force: false,
            inputs: vec![raw_dir.join(&f.path)],
            today,
        };
        let outcome = job.run(key)?;
        let Some(drop) = outcome.drop else {
            return Err(Error::Refused(format!(
                "{} was refused ({} rows rejected): the demo data should be valid",
                f.path.display(),
                outcome.rejected_rows
            )));
        };
        rows += outcome.rows;
        drops.push(drop);
    }
    Ok(Drops {
        generated,
        drops,
        rows,
    })
}

/// The demo's member list: every synthetic NGO with a made-up name, and
/// the forms it sends when it does not send both.
pub fn members_toml(generated: &Generated) -> String {
    let mut forms: BTreeMap<&str, BTreeSet<Form>> = BTreeMap::new();
    for f in &generated.files {
        forms.entry(&f.org).or_default().insert(f.form);
    }
    let mut s = String::from(
        "# The task force's members: org code = display name, or\n\
         # org code = { name = \"...\", forms = [...] } for an NGO that does not\n\
         # send every form. Drops from orgs not listed here are refused.\n[members]\n",
    );
    for (org, sent) in forms {
        let name = format!("Demo member {}", org.trim_start_matches("NGO"));
        if sent.len() == Form::ALL.len() {
            s.push_str(&format!("{org} = \"{name}\"\n"));
        } else {
            let list: Vec<String> = sent.iter().map(|f| format!("\"{f}\"")).collect();
            s.push_str(&format!(
                "{org} = {{ name = \"{name}\", forms = [{}] }}\n",
                list.join(", ")
            ));
        }
    }
    s
}
