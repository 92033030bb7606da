//! The release ledger: what each published report showed, kept in the
//! store so that later reports can be checked against it.
//!
//! A report that is published (written after passing its audit) leaves
//! `releases/SHA256.json`, its tables as a reader saw them (the published
//! counts; suppressed cells without a value), and a `release` entry in
//! `ledger.jsonl` with the window and, when an earlier release covered the
//! same window, which one it revises. Only published values are kept:
//! suppressed counts never enter the store's records of releases.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ledger::{Entry, Outcome};
use super::{State, Store, TMP_DIR, now};
use crate::drop::sync_dir;
use crate::error::{Error, Result};
use crate::pseudonymise::Period;

/// The folder of release records in a store.
pub const RELEASES_DIR: &str = "releases";

/// What one report published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// First month of the window.
    pub from: String,
    /// Last month of the window.
    pub to: String,
    /// The report's title.
    pub title: String,
    /// The tables as published.
    pub tables: Vec<ReleasedTable>,
}

/// One published table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedTable {
    /// Table name.
    pub name: String,
    /// Who the grand total counts.
    pub population: String,
    /// Conditions every cell has.
    #[serde(rename = "where")]
    pub where_: Vec<(String, String)>,
    /// Dimension names.
    pub dimensions: Vec<String>,
    /// Labels and the published count (`null`: suppressed).
    pub cells: Vec<(Vec<String>, Option<u64>)>,
}

/// A release the ledger records.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its ledger entry.
    pub seq: u64,
    /// SHA-256 of its record.
    pub sha256: String,
    /// The record's path in the store.
    pub path: String,
    /// Its window, `FROM..TO`.
    pub window: String,
}

impl Recorded {
    /// The window's months.
    pub fn bounds(&self) -> Option<(Period, Period)> {
        let (a, b) = self.window.split_once("..")?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }

    /// How it is named in messages.
    pub fn label(&self) -> String {
        format!("{} (ledger entry {})", self.window, self.seq)
    }
}

/// The window as the ledger writes it.
pub fn window(from: Period, to: Period) -> String {
    format!("{from}..{to}")
}

/// Whether one window contains the other.
pub fn nested(a: (Period, Period), b: (Period, Period)) -> bool {
    (a.0 <= b.0 && b.1 <= a.1) || (b.0 <= a.0 && a.1 <= b.1)
}

/// Reads a recorded release, checking its SHA-256.
pub fn read(store: &Store, r: &Recorded) -> Result<Release> {
    let path = store.root().join(&r.path);
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::io(
            format!(
                "cannot read the release record {} (ledger entry {}); run `safetally store \
                 verify`",
                r.path, r.seq
            ),
            e,
        )
    })?;
    if hex::encode(Sha256::digest(&bytes)) != r.sha256 {
        return Err(Error::Refused(format!(
            "the release record {} has changed since ledger entry {}: restore it from a backup",
            r.path, r.seq
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Refused(format!("the release record {} cannot be read: {e}", r.path)))
}

/// The releases over windows nested with `from..to` (containing it, inside
/// it, or the same), oldest first.
pub fn nested_releases(
    state: &State,
    store: &Store,
    from: Period,
    to: Period,
) -> Result<Vec<(Recorded, Release)>> {
    let mut out = Vec::new();
    for r in &state.releases {
        if r.bounds().is_some_and(|b| nested(b, (from, to))) {
            out.push((r.clone(), read(store, r)?));
        }
    }
    Ok(out)
}

/// Records a published report. Fails, recording nothing, when a release
/// was recorded after `known` (the number of ledger entries the report was
/// built from): the report's suppression did not see it.
pub fn record(store: &Store, release: &Release, known: usize) -> Result<Entry> {
    let _lock = store.lock("report", true)?;
    let state = store.state()?;
    if let Some(r) = state.releases.iter().find(|r| r.seq as usize > known) {
        return Err(Error::Refused(format!(
            "another report was published while this one was made (release {}): run the \
             report again so that it takes that release into account",
            r.label()
        )));
    }
    let text = serde_json::to_string_pretty(release).expect("JSON") + "\n";
    let sha = hex::encode(Sha256::digest(text.as_bytes()));
    let rel = format!("{RELEASES_DIR}/{sha}.json");
    let dir = store.root().join(RELEASES_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let target = store.root().join(&rel);
    if !target.exists() {
        let tmp_dir = store.root().join(TMP_DIR);
        std::fs::create_dir_all(&tmp_dir)
            .map_err(|e| Error::io(format!("cannot create {}", tmp_dir.display()), e))?;
        let tmp = tmp_dir.join(format!("{sha}.json"));
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &target)
            .map_err(|e| Error::io(format!("cannot write {}", target.display()), e))?;
        sync_dir(&dir);
    }
    let (Ok(from), Ok(to)) = (release.from.parse(), release.to.parse()) else {
        return Err(Error::Usage("a release's window is not YYYY-MM".into()));
    };
    let mut e = Entry::new(Outcome::Release);
    e.sha256 = Some(sha);
    e.path = Some(rel);
    e.window = Some(window(from, to));
    e.revises = state
        .releases
        .iter()
        .rev()
        .find(|r| r.bounds() == Some((from, to)))
        .map(|r| r.seq);
    let mut ledger = state.ledger;
    ledger.append(&store.ledger_path(), vec![e], &now())?;
    Ok(ledger.entries.last().cloned().expect("just appended"))
}

/// Files under `releases/` (relative to the store).
pub fn files(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(RELEASES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        out.push(format!(
            "{RELEASES_DIR}/{}",
            e.file_name().to_string_lossy()
        ));
    }
    out.sort();
    Ok(out)
}
