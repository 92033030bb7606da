//! Ingest: verify offered drops, file them, record each in the ledger; and
//! recovery from an ingest that was interrupted.
//!
//! Drops are taken in groups. For each group: read and verify every drop
//! (in parallel), decide each outcome in the order offered, write the
//! files to file under `.tmp/` and sync them (in parallel: a sync is slow,
//! many at once are not much slower than one), rename them into place,
//! sync their folders, then append the group's ledger entries in one write
//! and sync the ledger. A crash before the append leaves files the ledger
//! does not name: in `.tmp/` (removed by recovery) or in place (filed by
//! recovery, after verifying them again, with `recovered: true`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::ledger::{Entry, Outcome, truncate_torn_tail};
use super::{DROPS_DIR, Members, Slot, State, Store, TMP_DIR, now};
use crate::drop::{DropMeta, Refusal, inspect, sync_dir};
use crate::error::{Error, Result};

/// Drops verified and filed per ledger append.
const GROUP: usize = 32;
/// Threads that write and sync files at once.
const SYNC_THREADS: usize = 16;

/// A drop offered to `ingest`, and what became of it.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The file as given.
    pub source: PathBuf,
    /// Its ledger entry.
    pub entry: Entry,
    /// Other entries it caused: a new key epoch (the first drop), the
    /// drop it superseded.
    pub also: Vec<Entry>,
}

/// A drop read and verified, before its outcome is decided.
struct Read {
    sha256: Option<String>,
    bytes: Bytes,
    verdict: std::result::Result<DropMeta, Refusal>,
}

fn read_one(path: &Path) -> Read {
    match std::fs::read(path) {
        Ok(data) => {
            let sha = hex::encode(Sha256::digest(&data));
            let bytes = Bytes::from(data);
            Read {
                sha256: Some(sha),
                verdict: inspect(bytes.clone()),
                bytes,
            }
        }
        Err(e) => Read {
            sha256: None,
            bytes: Bytes::new(),
            verdict: Err(Refusal {
                meta: None,
                reason: format!("cannot read the file: {e}"),
            }),
        },
    }
}

/// Where a drop is filed, relative to the store.
pub fn filed_path(slot: &Slot, sha256: &str) -> String {
    format!(
        "{DROPS_DIR}/form={}/period={}/org={}/{sha256}.parquet",
        slot.form, slot.period, slot.org
    )
}

fn describe(e: &mut Entry, m: &DropMeta) {
    e.form = Some(m.form.code().to_string());
    e.org = Some(m.org.clone());
    e.period = Some(m.period.to_string());
    e.fingerprint = Some(m.key_fingerprint.clone());
    e.rows = Some(m.rows);
    e.rejected_rows = Some(m.rejected_rows);
    e.created = Some(m.created.clone());
    e.content_sha256 = m.content_sha256.clone();
}

/// The outcome of one drop: its entries, and the file to put in place.
struct Decision {
    offered: Offered,
    file: Option<String>,
}

/// Decides what becomes of one verified drop and applies it to `state`
/// (not yet to the ledger file). Sequence numbers continue from `state`.
fn decide(
    state: &mut State,
    next_seq: &mut u64,
    members: Option<&Members>,
    source: &Path,
    read: &Read,
    recovered: bool,
) -> Decision {
    let name = source.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut push = |mut e: Entry, state: &mut State| {
        e.seq = *next_seq;
        *next_seq += 1;
        e.recovered = recovered;
        state.apply(&e);
        e
    };
    let mut entry = Entry::new(Outcome::Refused);
    entry.sha256 = read.sha256.clone();
    entry.source = name;
    let finish = |entry: Entry, also: Vec<Entry>, file: Option<String>| Decision {
        offered: Offered {
            source: source.to_path_buf(),
            entry,
            also,
        },
        file,
    };
    // The same bytes filed before: nothing changes.
    if let Some(sha) = &read.sha256
        && let Some(f) = state.filed.get(sha)
    {
        entry.outcome = Outcome::Duplicate;
        entry.by = Some(sha.clone());
        entry.path = Some(f.path.clone());
        if let Ok(m) = &read.verdict {
            describe(&mut entry, m);
        }
        let entry = push(entry, state);
        return finish(entry, vec![], None);
    }
    let meta = match &read.verdict {
        Ok(m) => m,
        Err(r) => {
            if let Some(m) = &r.meta {
                describe(&mut entry, m);
            }
            entry.reason = Some(r.reason.clone());
            let entry = push(entry, state);
            return finish(entry, vec![], None);
        }
    };
    describe(&mut entry, meta);
    let refuse = |mut entry: Entry, reason: String| {
        entry.reason = Some(reason);
        entry
    };
    if let Some(members) = members
        && !members.members.contains_key(&meta.org)
    {
        let e = refuse(
            entry,
            format!(
                "org {} is not on the store's member list ({}): check the org code the NGO \
                 gave to pseudonymise, or add the NGO to the member list",
                meta.org,
                super::MEMBERS_FILE
            ),
        );
        let e = push(e, state);
        return finish(e, vec![], None);
    }
    let mut also = Vec::new();
    match state.epoch() {
        None => {
            let mut e = Entry::new(Outcome::Epoch);
            e.epoch = Some(1);
            e.fingerprint = Some(meta.key_fingerprint.clone());
            e.reason = Some("set by the first drop accepted".to_string());
            also.push(push(e, state));
        }
        Some((n, fp)) if fp != meta.key_fingerprint => {
            let reason = match state
                .epochs
                .iter()
                .find(|(_, old, _)| *old == meta.key_fingerprint)
            {
                Some((old, _, _)) => format!(
                    "made with the key of epoch {old} ({}), which the store has retired: the \
                     NGO must pseudonymise again with the current task-force key ({fp}, \
                     epoch {n})",
                    meta.key_fingerprint
                ),
                None => format!(
                    "made with key {} but the store's current key is {fp} (epoch {n}): the NGO \
                     must pseudonymise again with the current task-force key",
                    meta.key_fingerprint
                ),
            };
            let e = refuse(entry, reason);
            let e = push(e, state);
            return finish(e, vec![], None);
        }
        Some(_) => {}
    }
    let (epoch, _) = state.epoch().expect("an epoch is set");
    entry.epoch = Some(epoch);
    let slot = Slot {
        form: meta.form.code().to_string(),
        period: meta.period.to_string(),
        org: meta.org.clone(),
    };
    let sha = read.sha256.clone().expect("a read file has a hash");
    let path = filed_path(&slot, &sha);
    entry.path = Some(path.clone());
    // The newest by the NGO's creation time is current; ties go to the
    // later arrival.
    let current = state
        .current()
        .get(&slot)
        .map(|(s, f)| (s.to_string(), f.path.clone(), f.created.clone()));
    match current {
        Some((cur_sha, _, cur_created)) if cur_created > meta.created => {
            entry.outcome = Outcome::Superseded;
            entry.by = Some(cur_sha);
            let entry = push(entry, state);
            finish(entry, also, Some(path))
        }
        Some((cur_sha, cur_path, _)) => {
            entry.outcome = Outcome::Accepted;
            let entry = push(entry, state);
            let mut old = Entry::new(Outcome::Superseded);
            old.sha256 = Some(cur_sha.clone());
            old.path = Some(cur_path);
            old.by = Some(sha);
            if let Some(f) = state.filed.get(&cur_sha) {
                old.form = Some(f.slot.form.clone());
                old.org = Some(f.slot.org.clone());
                old.period = Some(f.slot.period.clone());
                old.rows = Some(f.rows);
                old.rejected_rows = Some(f.rejected_rows);
                old.created = Some(f.created.clone());
                old.content_sha256 = f.content_sha256.clone();
            }
            also.push(push(old, state));
            finish(entry, also, Some(path))
        }
        None => {
            entry.outcome = Outcome::Accepted;
            let entry = push(entry, state);
            finish(entry, also, Some(path))
        }
    }
}

/// Runs `f` on every item with up to `threads` threads; results in order.
fn par_each<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let threads = threads.min(items.len()).max(1);
    let mut parts: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker panicked"))
            .collect()
    });
    let mut all: Vec<(usize, R)> = parts.drain(..).flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// A store-relative path (with `/`) as a path under `root`.
pub fn resolve(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}

/// Writes each file under `.tmp/`, syncs it, renames it into place, and
/// syncs the folders that changed. On failure (a full disk, say) nothing of
/// it is left: the files written are removed again.
fn put_in_place(store: &Store, files: &[(Bytes, String)]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let tmp = store.root().join(TMP_DIR);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    let tmp_path = |rel: &str| {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        tmp.join(format!("{name}.tmp"))
    };
    let written = par_each(files, SYNC_THREADS, |(bytes, rel)| -> Result<()> {
        let path = tmp_path(rel);
        let ctx = || format!("cannot write {}", path.display());
        let mut f = std::fs::File::create(&path).map_err(|e| Error::io(ctx(), e))?;
        std::io::Write::write_all(&mut f, bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(ctx(), e))
    });
    let placed = written
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .and_then(|_| rename_into_place(store, files, &tmp_path));
    if placed.is_err() {
        for (_, rel) in files {
            let _ = std::fs::remove_file(tmp_path(rel));
        }
        remove_filed(store, files);
    }
    placed
}

/// Renames each written file into place and syncs the folders that changed.
fn rename_into_place(
    store: &Store,
    files: &[(Bytes, String)],
    tmp_path: &dyn Fn(&str) -> PathBuf,
) -> Result<()> {
    let mut dirs = BTreeSet::new();
    for (_, rel) in files {
        let from = tmp_path(rel);
        let to = resolve(store.root(), rel);
        let parent = to.parent().unwrap_or(store.root());
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        std::fs::rename(&from, &to)
            .map_err(|e| Error::io(format!("cannot file {}", to.display()), e))?;
        // The file's folder and each folder above it, up to the store.
        let mut d = parent;
        while d.starts_with(store.root()) {
            dirs.insert(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
    }
    let dirs: Vec<PathBuf> = dirs.into_iter().collect();
    par_each(&dirs, SYNC_THREADS, |d| sync_dir(d));
    Ok(())
}

/// Removes files of a group that could not be recorded (best effort: what
/// stays is an unrecorded file, which recovery and `store verify` find).
fn remove_filed(store: &Store, files: &[(Bytes, String)]) {
    for (_, rel) in files {
        let _ = std::fs::remove_file(resolve(store.root(), rel));
    }
}

/// Expands the offered paths: a folder stands for the `.parquet` files in
/// it, in name order (for Windows, whose shell does not expand `*`).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "parquet") && f.is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Ingests drops in the order given. The caller holds the store's lock and
/// has run [`recover`]. One bad drop does not stop the others.
pub fn ingest(
    store: &Store,
    sources: &[PathBuf],
    mut progress: impl FnMut(&Offered),
) -> Result<Vec<Offered>> {
    let members = store.members()?;
    let mut state = store.state()?;
    if let Some(p) = state.ledger.problems.first() {
        return Err(Error::Refused(format!(
            "the store's ledger is damaged ({p}): nothing was ingested. Run `safetally store \
             verify {}` and restore the ledger from a backup",
            store.root().display()
        )));
    }
    let ledger_path = store.ledger_path();
    let mut out = Vec::with_capacity(sources.len());
    for group in sources.chunks(GROUP) {
        let reads: Vec<Read> = group.par_iter().map(|p| read_one(p)).collect();
        let mut next_seq = state.ledger.entries.len() as u64 + 1;
        let mut entries = Vec::new();
        let mut files = Vec::new();
        let mut offered = Vec::with_capacity(group.len());
        for (source, read) in group.iter().zip(&reads) {
            let d = decide(
                &mut state,
                &mut next_seq,
                members.as_ref(),
                source,
                read,
                false,
            );
            if let Some(rel) = d.file {
                files.push((read.bytes.clone(), rel));
            }
            let o = d.offered;
            entries.extend(
                o.also
                    .iter()
                    .filter(|e| e.outcome == Outcome::Epoch)
                    .cloned(),
            );
            entries.push(o.entry.clone());
            entries.extend(
                o.also
                    .iter()
                    .filter(|e| e.outcome != Outcome::Epoch)
                    .cloned(),
            );
            offered.push(o);
        }
        put_in_place(store, &files)?;
        if let Err(e) = state.ledger.append(&ledger_path, entries, &now()) {
            // The group's files are not recorded: take them out again, so
            // the store is as it was before the group.
            remove_filed(store, &files);
            return Err(e);
        }
        for o in offered {
            progress(&o);
            out.push(o);
        }
    }
    Ok(out)
}

/// Every file under `drops/`, as store-relative paths with `/`.
pub fn files_under_drops(store: &Store) -> Result<Vec<String>> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
        };
        for e in entries {
            let e = e.map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = format!("{rel}/{name}");
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), &child, out)?;
            } else {
                out.push(child);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&store.root().join(DROPS_DIR), DROPS_DIR, &mut out)?;
    out.sort();
    Ok(out)
}

/// Repairs what an interrupted command left; returns what it did, in
/// words. The caller holds the lock. Removes an incomplete last ledger line
/// and unfinished files in `.tmp/`; files drops that were put in place but
/// not yet recorded (after verifying them again); records supersessions
/// the ledger lacks. Anything else out of place is left for
/// `store verify` to report.
pub fn recover(store: &Store) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let torn = truncate_torn_tail(&store.ledger_path())?;
    if torn > 0 {
        done.push(format!(
            "removed an incomplete last ledger line ({torn} bytes) left by an interrupted command"
        ));
    }
    let tmp = store.root().join(TMP_DIR);
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        let mut removed = 0;
        for e in entries.flatten() {
            if std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&tmp);
            done.push(format!(
                "removed {removed} unfinished file(s) of an interrupted ingest from {TMP_DIR}/"
            ));
        }
    }
    let mut state = store.state()?;
    if !state.ledger.problems.is_empty() {
        // A damaged ledger is for a person to look at; verify reports it.
        return Ok(done);
    }
    let known: BTreeSet<&str> = state.filed.values().map(|f| f.path.as_str()).collect();
    let orphans: Vec<String> = files_under_drops(store)?
        .into_iter()
        .filter(|p| !known.contains(p.as_str()))
        .collect();
    let members = store.members()?;
    let mut next_seq = state.ledger.entries.len() as u64 + 1;
    let mut entries = Vec::new();
    for rel in orphans {
        let path = resolve(store.root(), &rel);
        let read = read_one(&path);
        let named = rel
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".parquet"))
            .map(str::to_string);
        if named != read.sha256 || read.verdict.is_err() {
            continue;
        }
        // Decide on a copy: only a decision that files it where it lies
        // is taken.
        let mut trial_state = state.clone();
        let mut trial_seq = next_seq;
        let d = decide(
            &mut trial_state,
            &mut trial_seq,
            members.as_ref(),
            &path,
            &read,
            true,
        );
        if d.file.as_deref() != Some(rel.as_str()) {
            continue;
        }
        let d = decide(
            &mut state,
            &mut next_seq,
            members.as_ref(),
            &path,
            &read,
            true,
        );
        let mut o = d.offered;
        o.entry.source = None;
        entries.extend(
            o.also
                .iter()
                .filter(|e| e.outcome == Outcome::Epoch)
                .cloned(),
        );
        entries.push(o.entry);
        entries.extend(o.also.into_iter().filter(|e| e.outcome != Outcome::Epoch));
        done.push(format!(
            "filed {rel}, which an interrupted ingest had put in place but not recorded"
        ));
    }
    // Supersessions the ledger lacks (an append cut short between a drop
    // and the entry that supersedes the one before it).
    let current: BTreeSet<String> = state
        .current()
        .values()
        .map(|(sha, _)| sha.to_string())
        .collect();
    let mut missing: Vec<(String, super::Filed)> = state
        .filed
        .iter()
        .filter(|(sha, f)| !f.superseded && !current.contains(*sha))
        .map(|(s, f)| (s.clone(), f.clone()))
        .collect();
    missing.sort_by_key(|(_, f)| f.seq);
    for (sha, f) in missing {
        let by = state
            .current()
            .get(&f.slot)
            .map(|(s, _)| s.to_string())
            .expect("a slot with a filed drop has a current one");
        let mut e = Entry::new(Outcome::Superseded);
        e.sha256 = Some(sha);
        e.path = Some(f.path.clone());
        e.form = Some(f.slot.form.clone());
        e.org = Some(f.slot.org.clone());
        e.period = Some(f.slot.period.clone());
        e.rows = Some(f.rows);
        e.rejected_rows = Some(f.rejected_rows);
        e.created = Some(f.created.clone());
        e.content_sha256 = f.content_sha256.clone();
        e.by = Some(by);
        e.recovered = true;
        e.seq = next_seq;
        next_seq += 1;
        state.apply(&e);
        done.push(format!(
            "recorded that {} supersedes {}, which an interrupted ingest had not recorded",
            e.by.as_deref().unwrap_or_default(),
            f.path
        ));
        entries.push(e);
    }
    let ledger_path = store.ledger_path();
    state.ledger.append(&ledger_path, entries, &now())?;
    Ok(done)
}
