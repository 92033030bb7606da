//! A full disk: `pseudonymise`, `ingest` and `report` exit with the
//! machine-failure code (3) and a message that says the data is not at
//! fault, leave nothing half-written, and the store still verifies.
//!
//! The disk is a small tmpfs, mounted for the test (this needs root, as CI
//! has). Where mounting is not allowed the tests say so and pass, unless
//! `SAFETALLY_REQUIRE_TMPFS` is set (as `.ci/run` sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Fleet, World, screening_header, screening_row, tree};

/// A tmpfs mounted on a temporary folder; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `kib` KiB, or `None` (with a note) where mounting is not
    /// allowed.
    fn mount(kib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var_os("SAFETALLY_REQUIRE_TMPFS").is_none(),
                "cannot mount a tmpfs, and SAFETALLY_REQUIRE_TMPFS is set"
            );
            eprintln!("skipped: mounting a tmpfs is not allowed here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Fills what is left of the disk with one file, `filler`.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        // Whatever a smaller write can still take.
        while f.write_all(&[0]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn assert_machine_failure(r: &crate::util::Run) {
    assert_eq!(r.code, 3, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not of the data"), "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
}

/// Every file of a store by path, with the SHA-256 of its bytes, but the
/// lock file (which each command rewrites with its name).
fn store_files(store: &Path) -> Vec<(String, String)> {
    use sha2::Digest;
    tree(store)
        .into_iter()
        .filter(|(p, _)| p != ".lock")
        .map(|(p, b)| (p, hex::encode(sha2::Sha256::digest(b))))
        .collect()
}

/// Every file below `dir`, by path, but the filler.
fn files(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p != "filler")
        .collect()
}

#[test]
fn pseudonymise_on_a_full_disk_exits_3_and_writes_nothing() {
    let Some(disk) = Tmpfs::mount(256) else {
        return;
    };
    let w = World::new();
    w.key();
    let mut csv = screening_header() + "\n";
    for i in 0..300 {
        csv += &screening_row(&[
            ("case_ref", &format!("C{i}")),
            ("screening_date", "2018-03-05"),
            ("family_name", &format!("Family{i}")),
            ("given_name", "Ana"),
            ("date_of_birth", "1990-01-01"),
            ("nationality", "IDN"),
            ("outcome", "pending"),
        ]);
        csv += "\n";
    }
    w.write("march.csv", csv);
    let out = disk.path("out");
    std::fs::create_dir(&out).unwrap();
    let args = [
        "pseudonymise",
        "--form",
        "screening",
        "--org",
        "NGO01",
        "--period",
        "2018-03",
        "--key",
        "key",
        "--out",
        out.to_str().unwrap(),
        "march.csv",
    ];
    disk.fill();
    let r = w.run(&args);
    assert_machine_failure(&r);
    assert_eq!(files(&out), Vec::<String>::new(), "nothing half-written");
    // With space again, the same command makes the drop.
    disk.free();
    w.run(&args).ok();
    assert_eq!(files(&out), ["screening_NGO01_2018-03.parquet"]);
}

#[test]
fn ingest_on_a_full_disk_exits_3_leaves_the_store_as_it_was_and_it_verifies() {
    let Some(disk) = Tmpfs::mount(512) else {
        return;
    };
    let f = Fleet::new();
    let drops: Vec<PathBuf> = (1..=3)
        .map(|o| f.drop(&format!("NGO{o:02}"), "2018-03", 40, "full"))
        .collect();
    let store = disk.path("store");
    let s = store.to_str().unwrap();
    f.w.run(&["store", "init", s]).ok();
    f.w.run(&["ingest", "--store", s, drops[0].to_str().unwrap()])
        .ok();
    let before = store_files(&store);
    disk.fill();
    let mut args = vec!["ingest", "--store", s];
    args.extend(drops[1..].iter().map(|p| p.to_str().unwrap()));
    let r = f.w.run(&args);
    assert_machine_failure(&r);
    assert_eq!(store_files(&store), before, "the store is as it was");
    f.w.run(&["store", "verify", s]).ok();
    disk.free();
    f.w.run(&args).ok();
    f.w.run(&["store", "verify", s]).ok();
    let filed = files(&store.join("drops"));
    assert_eq!(filed.len(), 3, "{filed:?}");
}

#[test]
fn report_to_a_full_disk_exits_3_writes_no_report_and_records_no_release() {
    let Some(disk) = Tmpfs::mount(256) else {
        return;
    };
    let f = Fleet::new();
    let drops: Vec<PathBuf> = (1..=3)
        .map(|o| f.drop(&format!("NGO{o:02}"), "2018-03", 10, "rep"))
        .collect();
    f.w.run(&["store", "init", "store"]).ok();
    let mut args = vec!["ingest", "--store", "store"];
    args.extend(drops.iter().map(|p| p.to_str().unwrap()));
    f.w.run(&args).ok();
    let store_before = store_files(&f.w.path("store"));
    disk.fill();
    let out = disk.path("report");
    let report = [
        "report",
        "--store",
        "store",
        "--from",
        "2018-03",
        "--to",
        "2018-03",
        "--out",
        out.to_str().unwrap(),
    ];
    let r = f.w.run(&report);
    assert_machine_failure(&r);
    assert!(!out.exists());
    assert_eq!(files(disk.dir.path()), Vec::<String>::new());
    assert_eq!(
        store_files(&f.w.path("store")),
        store_before,
        "no release recorded"
    );
    f.w.run(&["store", "verify", "store"]).ok();
    disk.free();
    f.w.run(&report).ok();
    assert!(out.join("report.html").exists());
}
