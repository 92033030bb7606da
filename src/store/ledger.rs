//! The ledger: `ledger.jsonl`, one JSON object per line, appended and
//! synced, never rewritten.
//!
//! Each entry carries its sequence number and the SHA-256 of the line
//! before it (`prev`), so a removed, reordered or edited line is found by
//! `store verify`. A line cut short by a crash (no final newline) is the
//! only thing recovery may remove: it was never complete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The ledger's file name in a store.
pub const LEDGER_FILE: &str = "ledger.jsonl";

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What became of a drop offered to the store, or a new key epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Verified and filed; the current drop for its form, org and period.
    Accepted,
    /// The same bytes were filed before; nothing changed.
    Duplicate,
    /// A filed drop that a newer one for the same form, org and period
    /// replaces. It stays in the store.
    Superseded,
    /// Not filed; `reason` says why.
    Refused,
    /// A new key epoch starts: drops must carry `fingerprint` from now on.
    Epoch,
    /// A report was published; `path` holds what it showed.
    Release,
}

impl Outcome {
    /// The word used in the ledger and on the terminal.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Superseded => "superseded",
            Outcome::Refused => "refused",
            Outcome::Epoch => "epoch",
            Outcome::Release => "release",
        }
    }
}

/// One ledger line. Fields that do not apply to an outcome are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// SHA-256 (hex) of the previous line, without its newline.
    pub prev: String,
    /// When the entry was made (RFC 3339, UTC).
    pub received: String,
    /// What happened.
    pub outcome: Outcome,
    /// SHA-256 (hex) of the drop's bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The offered file's name (never its folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where the drop is filed, relative to the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The drop's form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    /// The drop's organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The drop's period, YYYY-MM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// The key fingerprint of the drop, or of the new epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The key epoch (1, 2, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// Rows in the drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Rows the NGO's pseudonymise run rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_rows: Option<u64>,
    /// When the NGO made the drop (its metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The drop's content digest, verified at ingest (format 3); absent
    /// for a drop of an older format, whose content could not be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
    /// For `superseded`: the drop that replaces this one. For `duplicate`:
    /// the filed drop with the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For `refused` and `epoch`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Filed by recovery after an interrupted ingest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// For `release`: the report's window, `FROM..TO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// For `release`: the earlier release of the same window it revises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revises: Option<u64>,
}

impl Entry {
    /// A blank entry with this outcome; `seq`, `prev` and `received` are
    /// set when it is appended.
    pub fn new(outcome: Outcome) -> Self {
        Entry {
            seq: 0,
            prev: String::new(),
            received: String::new(),
            outcome,
            sha256: None,
            source: None,
            path: None,
            form: None,
            org: None,
            period: None,
            fingerprint: None,
            epoch: None,
            rows: None,
            rejected_rows: None,
            created: None,
            content_sha256: None,
            by: None,
            reason: None,
            recovered: false,
            window: None,
            revises: None,
        }
    }
}

/// The ledger as read: its entries, and what the next one must carry.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Every entry, in order.
    pub entries: Vec<Entry>,
    /// SHA-256 (hex) of the last line.
    pub last_hash: String,
    /// Problems found while reading (broken chain, bad line, gaps); empty
    /// for a sound ledger.
    pub problems: Vec<String>,
}

/// SHA-256 (hex) of one line without its newline.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

impl Ledger {
    /// Reads `path` (an absent file is an empty ledger). A final line with
    /// no newline is ignored here: recovery removes it.
    pub fn read(path: &Path) -> Result<Ledger> {
        let mut text = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut text)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
        Ok(Ledger::parse(&text))
    }

    /// Reads a ledger's bytes. Never fails: what is wrong is in
    /// `problems`, line by line.
    pub fn parse(text: &[u8]) -> Ledger {
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => &text[..=i],
            None => &text[..0],
        };
        let mut ledger = Ledger {
            last_hash: GENESIS.to_string(),
            ..Ledger::default()
        };
        for (i, line) in complete.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => {
                    if e.seq != ledger.entries.len() as u64 + 1 {
                        ledger.problems.push(format!(
                            "ledger line {n}: sequence number {} where {} was expected \
                             (a line was removed or added)",
                            e.seq,
                            ledger.entries.len() + 1
                        ));
                    }
                    if e.prev != ledger.last_hash {
                        ledger.problems.push(format!(
                            "ledger line {n}: does not follow the line before it \
                             (a line was edited, removed or reordered)"
                        ));
                    }
                    ledger.entries.push(e);
                }
                Err(err) => ledger
                    .problems
                    .push(format!("ledger line {n}: not a ledger entry ({err})")),
            }
            ledger.last_hash = line_hash(line);
        }
        ledger
    }

    /// Appends entries in one write, then syncs the file. Fills in each
    /// entry's `seq`, `prev` and `received`.
    pub fn append(&mut self, path: &Path, entries: Vec<Entry>, received: &str) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for mut e in entries {
            e.seq = self.entries.len() as u64 + 1;
            e.prev = std::mem::take(&mut self.last_hash);
            e.received = received.to_string();
            let line = serde_json::to_vec(&e).expect("entries serialise");
            self.last_hash = line_hash(&line);
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            self.entries.push(e);
        }
        let ctx = || format!("cannot append to {}", path.display());
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(ctx(), e))?;
        let before = f.metadata().map_err(|e| Error::io(ctx(), e))?.len();
        if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_all()) {
            // All of the group or none of it (a full disk can take some
            // lines and not the rest): cut the file back to where it was.
            // Should even that fail, recovery removes a torn last line and
            // `store verify` reports the rest.
            let _ = f.set_len(before).and_then(|()| f.sync_all());
            return Err(Error::io(ctx(), e));
        }
        Ok(())
    }
}

/// Removes a final line cut short by a crash (bytes after the last
/// newline). Returns how many bytes were removed.
pub fn truncate_torn_tail(path: &Path) -> Result<u64> {
    let ctx = || format!("cannot repair {}", path.display());
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(ctx(), e)),
    };
    let len = f.metadata().map_err(|e| Error::io(ctx(), e))?.len();
    if len == 0 {
        return Ok(0);
    }
    // Read backwards in blocks until a newline is found.
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut block[..n]))
            .map_err(|e| Error::io(ctx(), e))?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if keep == len {
        return Ok(0);
    }
    f.set_len(keep)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(ctx(), e))?;
    Ok(len - keep)
}
