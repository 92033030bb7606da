//! The secretariat's store: verified drops filed in a hive-style layout,
//! and the ledger that says what each file is.
//!
//! ```text
//! STORE/
//!   safetally-store.toml      marks the folder as a store (format version)
//!   members.toml              optional member list: org code = display name
//!   ledger.jsonl              append-only history (see [`ledger`])
//!   drops/form=F/period=P/org=O/SHA256.parquet
//!   .lock                     held by the command using the store
//!   .tmp/                     files being written; emptied by recovery
//! ```
//!
//! The ledger is the truth: a file under `drops/` counts only when a ledger
//! entry files it, so a reader that follows the ledger never sees a
//! half-done ingest. Every command that uses a store takes its lock and
//! first repairs what an interrupted command left ([`recover`]).

pub mod ingest;
pub mod ledger;
pub mod release;
pub mod status;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::drop::{is_fingerprint, write_text_atomically};
use crate::error::{Error, Result};
use crate::pseudonymise::parse_org;
use crate::schema::Form;
pub use ingest::{Offered, recover};
use ledger::{Entry, LEDGER_FILE, Ledger, Outcome};

/// The file that marks a folder as a store.
pub const MARKER_FILE: &str = "safetally-store.toml";
/// The optional member list.
pub const MEMBERS_FILE: &str = "members.toml";
/// Where drops are filed.
pub const DROPS_DIR: &str = "drops";
/// Files being written.
pub const TMP_DIR: &str = ".tmp";
/// The lock file.
pub const LOCK_FILE: &str = ".lock";
/// The store layout's version.
pub const STORE_FORMAT: u32 = 1;

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The member list: org code to display name, and optionally the forms
/// the NGO sends (all forms when not given).
///
/// ```toml
/// [members]
/// NGO01 = "Harbour Light"
/// NGO05 = { name = "Second Shelter", forms = ["screening"] }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    /// By org code.
    pub members: BTreeMap<String, Member>,
}

/// One member organisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Member {
    /// Just the display name: the NGO sends every form.
    Name(String),
    /// The display name and the forms it sends.
    Full {
        /// Display name.
        name: String,
        /// Form codes the NGO sends each month.
        forms: Vec<Form>,
    },
}

impl Member {
    /// The display name.
    pub fn name(&self) -> &str {
        match self {
            Member::Name(n) | Member::Full { name: n, .. } => n,
        }
    }

    /// Whether the NGO is expected to send this form.
    pub fn sends(&self, form: Form) -> bool {
        match self {
            Member::Name(_) => true,
            Member::Full { forms, .. } => forms.contains(&form),
        }
    }
}

impl Members {
    /// Reads and checks a member list.
    pub fn read(path: &Path) -> Result<Members> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        Members::parse(&text, path)
    }

    /// Reads and checks a member list's text (`path` for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Members> {
        let members: Members = toml::from_str(text).map_err(|e| {
            Error::Usage(format!(
                "{} is not a member list: {}. Write one line per NGO under [members], \
                 like NGO07 = \"Harbour Light\" or \
                 NGO07 = {{ name = \"Harbour Light\", forms = [\"screening\"] }}",
                path.display(),
                e.message().trim()
            ))
        })?;
        for code in members.members.keys() {
            let ok = parse_org(code).map(|c| &c == code).unwrap_or(false);
            if !ok {
                return Err(Error::Usage(format!(
                    "{}: '{code}' is not an org code (capital letters, digits, '-' and \
                     '_', as the NGOs give --org)",
                    path.display()
                )));
            }
        }
        Ok(members)
    }
}

/// A held lock on a store; released when dropped (also when the process
/// dies, by the operating system).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// What the ledger says the store holds.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// The ledger as read.
    pub ledger: Ledger,
    /// Key epochs in order: (epoch, fingerprint, when it started).
    pub epochs: Vec<(u32, String, String)>,
    /// Filed drops by SHA-256.
    pub filed: HashMap<String, Filed>,
    /// Published reports, in order.
    pub releases: Vec<release::Recorded>,
}

/// A drop the ledger files.
#[derive(Debug, Clone)]
pub struct Filed {
    /// Path relative to the store.
    pub path: String,
    /// Form, org and period.
    pub slot: Slot,
    /// When the NGO made it.
    pub created: String,
    /// When it was filed.
    pub received: String,
    /// Ledger sequence number of its filing.
    pub seq: u64,
    /// Rows in the drop.
    pub rows: u64,
    /// Rows rejected at the NGO.
    pub rejected_rows: u64,
    /// The key fingerprint the ledger records.
    pub fingerprint: String,
    /// The content digest the ledger records (format 3 drops).
    pub content_sha256: Option<String>,
    /// Marked superseded in the ledger.
    pub superseded: bool,
}

/// Form, period and org: what one drop covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// Form code.
    pub form: String,
    /// YYYY-MM.
    pub period: String,
    /// Org code.
    pub org: String,
}

impl State {
    /// Replays a ledger.
    pub fn replay(ledger: Ledger) -> State {
        let mut state = State::default();
        for e in &ledger.entries {
            state.apply(e);
        }
        state.ledger = ledger;
        state
    }

    /// Applies one entry to the state (not to the ledger).
    pub fn apply(&mut self, e: &Entry) {
        match e.outcome {
            Outcome::Epoch => {
                if let (Some(n), Some(fp)) = (e.epoch, &e.fingerprint) {
                    self.epochs.push((n, fp.clone(), e.received.clone()));
                }
            }
            Outcome::Accepted | Outcome::Superseded => {
                let Some(sha) = &e.sha256 else { return };
                if let Some(f) = self.filed.get_mut(sha) {
                    if e.outcome == Outcome::Superseded {
                        f.superseded = true;
                    }
                    return;
                }
                let (Some(path), Some(form), Some(period), Some(org)) =
                    (&e.path, &e.form, &e.period, &e.org)
                else {
                    return;
                };
                self.filed.insert(
                    sha.clone(),
                    Filed {
                        path: path.clone(),
                        slot: Slot {
                            form: form.clone(),
                            period: period.clone(),
                            org: org.clone(),
                        },
                        created: e.created.clone().unwrap_or_default(),
                        received: e.received.clone(),
                        seq: e.seq,
                        rows: e.rows.unwrap_or(0),
                        rejected_rows: e.rejected_rows.unwrap_or(0),
                        fingerprint: e.fingerprint.clone().unwrap_or_default(),
                        content_sha256: e.content_sha256.clone(),
                        superseded: e.outcome == Outcome::Superseded,
                    },
                );
            }
            Outcome::Release => {
                if let (Some(sha), Some(path), Some(window)) = (&e.sha256, &e.path, &e.window) {
                    self.releases.push(release::Recorded {
                        seq: e.seq,
                        sha256: sha.clone(),
                        path: path.clone(),
                        window: window.clone(),
                    });
                }
            }
            Outcome::Duplicate | Outcome::Refused => {}
        }
    }

    /// The current key epoch and its fingerprint.
    pub fn epoch(&self) -> Option<(u32, &str)> {
        self.epochs.last().map(|(n, fp, _)| (*n, fp.as_str()))
    }

    /// The current drop of each slot: the newest by the NGO's `created`
    /// time, ties to the later filing.
    pub fn current(&self) -> BTreeMap<&Slot, (&str, &Filed)> {
        let mut out: BTreeMap<&Slot, (&str, &Filed)> = BTreeMap::new();
        for (sha, f) in &self.filed {
            let newer = |old: &Filed| (&f.created, f.seq) > (&old.created, old.seq);
            match out.get(&f.slot) {
                Some((_, old)) if !newer(old) => {}
                _ => {
                    out.insert(&f.slot, (sha.as_str(), f));
                }
            }
        }
        out
    }
}

impl Store {
    /// Creates a store in `root` (absent or empty), with an optional member
    /// list and an optional first key epoch.
    pub fn init(root: &Path, members: Option<&Path>, fingerprint: Option<&str>) -> Result<Store> {
        if root.join(MARKER_FILE).exists() {
            return Err(Error::Usage(format!(
                "{} is already a store",
                root.display()
            )));
        }
        if root.exists() {
            let mut entries = std::fs::read_dir(root)
                .map_err(|e| Error::io(format!("cannot read {}", root.display()), e))?;
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} is not empty: give a new or empty folder for the store",
                    root.display()
                )));
            }
        }
        if let Some(fp) = fingerprint
            && !is_fingerprint(fp)
        {
            return Err(Error::Usage(format!(
                "'{fp}' is not a key fingerprint (like 8e1c-c37f-daa3-46bd): \
                 `safetally fingerprint --key FILE` prints it"
            )));
        }
        // Read and check the member list before creating anything.
        let members_text = match members {
            Some(path) => {
                Members::read(path)?;
                Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?,
                )
            }
            None => None,
        };
        std::fs::create_dir_all(root.join(DROPS_DIR))
            .and_then(|()| std::fs::create_dir_all(root.join(TMP_DIR)))
            .map_err(|e| Error::io(format!("cannot create {}", root.display()), e))?;
        let store = Store {
            root: root.to_path_buf(),
        };
        if let Some(text) = members_text {
            write_text_atomically(&store.root.join(MEMBERS_FILE), &text)?;
        }
        if let Some(fp) = fingerprint {
            let mut ledger = Ledger::read(&store.ledger_path())?;
            let mut e = Entry::new(Outcome::Epoch);
            e.epoch = Some(1);
            e.fingerprint = Some(fp.to_string());
            e.reason = Some("given to store init".to_string());
            ledger.append(&store.ledger_path(), vec![e], &now())?;
        }
        // The marker comes last: a folder without it is not a store yet.
        write_text_atomically(
            &store.root.join(MARKER_FILE),
            &format!(
                "# A safetally store: drops filed by `safetally ingest`, and their ledger.\n\
                 # Do not edit or move files here by hand; `safetally store verify` checks them.\n\
                 format = {STORE_FORMAT}\n\
                 created = \"{}\"\n",
                now()
            ),
        )?;
        Ok(store)
    }

    /// Opens an existing store.
    pub fn open(root: &Path) -> Result<Store> {
        let marker = root.join(MARKER_FILE);
        let text = std::fs::read_to_string(&marker).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Usage(format!(
                    "{} is not a safetally store (no {MARKER_FILE}): create one with \
                     `safetally store init {}`",
                    root.display(),
                    root.display()
                ))
            } else {
                Error::io(format!("cannot read {}", marker.display()), e)
            }
        })?;
        #[derive(Deserialize)]
        struct Marker {
            format: u32,
        }
        let m: Marker = toml::from_str(&text).map_err(|e| {
            Error::Usage(format!("{} is damaged: {}", marker.display(), e.message()))
        })?;
        if m.format != STORE_FORMAT {
            return Err(Error::Usage(format!(
                "{} is a store of format {} but this safetally knows format {STORE_FORMAT}: \
                 update safetally",
                root.display(),
                m.format
            )));
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ledger file.
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join(LEDGER_FILE)
    }

    /// The member list, when the store has one.
    pub fn members(&self) -> Result<Option<Members>> {
        let path = self.root.join(MEMBERS_FILE);
        if path.exists() {
            Members::read(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads the ledger and replays it.
    pub fn state(&self) -> Result<State> {
        Ok(State::replay(Ledger::read(&self.ledger_path())?))
    }

    /// Takes the store's lock. When another command holds it: waits (saying
    /// so on stderr) or, with `wait` false, refuses.
    pub fn lock(&self, command: &str, wait: bool) -> Result<Lock> {
        let path = self.root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another safetally command".to_string()
                } else {
                    holder.to_string()
                };
                if !wait {
                    return Err(Error::Busy(format!(
                        "the store {} is in use by {holder}: try again when it has finished",
                        self.root.display()
                    )));
                }
                eprintln!(
                    "the store {} is in use by {holder}; waiting for it to finish \
                     (Ctrl-C to stop waiting)",
                    self.root.display()
                );
                file.lock()
                    .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e));
            }
        }
        // Say who holds the lock, for anyone who has to wait.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(
            file,
            "safetally {command} (process {}, since {})",
            std::process::id(),
            now()
        );
        Ok(Lock { _file: file })
    }
}

/// Now, in UTC, as the ledger writes times.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
