//! `store verify`: every file against the ledger, and the ledger itself.

use std::collections::BTreeSet;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::ingest::{filed_path, files_under_drops, resolve};
use super::ledger::LEDGER_FILE;
use super::{Filed, Store, TMP_DIR};
use crate::drop::{DropMeta, Refusal, inspect};
use crate::error::Result;
use bytes::Bytes;

/// What `store verify` found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Every difference between the store and its ledger; empty when sound.
    pub problems: Vec<String>,
    /// Ledger entries.
    pub entries: usize,
    /// Drops filed.
    pub filed: usize,
    /// Drops current (one per form, org and period).
    pub current: usize,
    /// The current key epoch and fingerprint.
    pub epoch: Option<(u32, String)>,
}

/// Checks the store. The caller holds the lock (and has run recovery, so
/// what is left is for a person to look at).
pub fn verify(store: &Store) -> Result<Verified> {
    let state = store.state()?;
    let mut problems = state.ledger.problems.clone();
    if let Ok(bytes) = std::fs::read(store.ledger_path())
        && bytes.last().is_some_and(|&b| b != b'\n')
    {
        problems.push(format!("{LEDGER_FILE} ends in an incomplete line"));
    }
    // Every filed drop: present, unchanged, where its slot says.
    let mut filed: Vec<(&String, &super::Filed)> = state.filed.iter().collect();
    filed.sort_by_key(|(_, f)| f.seq);
    let file_problems: Vec<String> = filed
        .par_iter()
        .filter_map(|(sha, f)| {
            if f.path != filed_path(&f.slot, sha) {
                return Some(format!(
                    "ledger entry {} files {} in the wrong place",
                    f.seq, f.path
                ));
            }
            match std::fs::read(resolve(store.root(), &f.path)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                    "{} is missing (ledger entry {}): restore it from a backup",
                    f.path, f.seq
                )),
                Err(e) => Some(format!("{} cannot be read: {e}", f.path)),
                Ok(data) => {
                    let actual = hex::encode(Sha256::digest(&data));
                    if actual != **sha {
                        return Some(format!(
                            "{} has changed since it was filed (ledger entry {}): its SHA-256 \
                             is now {actual}; restore it from a backup",
                            f.path, f.seq
                        ));
                    }
                    // The bytes are those filed: the ledger must say what
                    // they say.
                    agrees(f, inspect(Bytes::from(data)))
                }
            }
        })
        .collect();
    problems.extend(file_problems);
    // Files the ledger does not name.
    let known: BTreeSet<&str> = state.filed.values().map(|f| f.path.as_str()).collect();
    for rel in files_under_drops(store)? {
        if !known.contains(rel.as_str()) {
            problems.push(format!(
                "{rel} is not in the ledger: move it out of the store (offer it to \
                 `safetally ingest` if it is a drop)"
            ));
        }
    }
    // Release records: present and unchanged; nothing else in releases/.
    for r in &state.releases {
        if let Err(e) = super::release::read(store, r) {
            problems.push(e.to_string());
        }
    }
    let recorded: BTreeSet<&str> = state.releases.iter().map(|r| r.path.as_str()).collect();
    for rel in super::release::files(store.root())? {
        if !recorded.contains(rel.as_str()) {
            problems.push(format!(
                "{rel} is not in the ledger: move it out of the store"
            ));
        }
    }
    if let Ok(mut left) = std::fs::read_dir(store.root().join(TMP_DIR))
        && left.next().is_some()
    {
        problems.push(format!(
            "{TMP_DIR}/ holds unfinished files (an ingest is running, or was interrupted)"
        ));
    }
    // One current drop per slot; every other one marked superseded.
    let current = state.current();
    let current_shas: BTreeSet<&str> = current.values().map(|(s, _)| *s).collect();
    for (sha, f) in &filed {
        let is_current = current_shas.contains(sha.as_str());
        if is_current && f.superseded {
            problems.push(format!(
                "{} is marked superseded but no newer drop for {} {} {} is filed",
                f.path, f.slot.form, f.slot.org, f.slot.period
            ));
        } else if !is_current && !f.superseded {
            problems.push(format!(
                "{} is not the newest drop for {} {} {} but is not marked superseded",
                f.path, f.slot.form, f.slot.org, f.slot.period
            ));
        }
    }
    Ok(Verified {
        problems,
        entries: state.ledger.entries.len(),
        filed: state.filed.len(),
        current: current.len(),
        epoch: state.epoch().map(|(n, fp)| (n, fp.to_string())),
    })
}

/// Whether a filed drop's ledger entry agrees with the drop's metadata.
fn agrees(f: &Filed, inspected: std::result::Result<DropMeta, Refusal>) -> Option<String> {
    let m = match inspected {
        Ok(m) => m,
        Err(r) => {
            return Some(format!(
                "{} (ledger entry {}) no longer passes the drop check: {}",
                f.path, f.seq, r.reason
            ));
        }
    };
    let fields = [
        ("form", f.slot.form.clone(), m.form.code().to_string()),
        ("org", f.slot.org.clone(), m.org.clone()),
        ("period", f.slot.period.clone(), m.period.to_string()),
        ("rows", f.rows.to_string(), m.rows.to_string()),
        (
            "rejected_rows",
            f.rejected_rows.to_string(),
            m.rejected_rows.to_string(),
        ),
        (
            "fingerprint",
            f.fingerprint.clone(),
            m.key_fingerprint.clone(),
        ),
        ("created", f.created.clone(), m.created.clone()),
        (
            "content_sha256",
            f.content_sha256.clone().unwrap_or_default(),
            m.content_sha256.clone().unwrap_or_default(),
        ),
    ];
    let wrong: Vec<String> = fields
        .iter()
        .filter(|(_, ledger, drop)| ledger != drop)
        .map(|(name, ledger, drop)| format!("{name} {ledger} but the drop says {drop}"))
        .collect();
    (!wrong.is_empty()).then(|| {
        format!(
            "ledger entry {} says {} (the ledger was edited)",
            f.seq,
            wrong.join(", ")
        )
    })
}
