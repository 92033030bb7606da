//! The secretariat's store through the binary: init, ingest (every refusal
//! reason, idempotence, supersession), the submission matrix, verify,
//! recovery from what a crash leaves, rotate, and the lock.

use std::path::{Path, PathBuf};

use crate::util::{Fleet, ledger, rewrite_drop, tree};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn init(f: &Fleet, extra: &[&str]) -> PathBuf {
    let mut args = vec!["store", "init", "store"];
    args.extend(extra);
    f.w.run(&args).ok();
    f.w.path("store")
}

fn ingest(f: &Fleet, drops: &[&Path]) -> crate::util::Run {
    let mut args = vec!["ingest", "--store", "store"];
    args.extend(drops.iter().map(|p| s(p)));
    f.w.run(&args)
}

fn outcomes(store: &Path) -> Vec<String> {
    ledger(store)
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ingest_files_each_drop_by_form_period_org_under_its_hash_and_twice_changes_nothing() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let a = f.drop("NGO01", "2018-03", 3, "a");
    let b = f.drop("NGO02", "2018-03", 2, "a");
    let c = f.drop("NGO01", "2018-04", 1, "a");
    let r = ingest(&f, &[&a, &b, &c]);
    r.ok();
    assert!(r.stdout.contains("3 offered: 3 accepted"), "{}", r.stdout);
    let sha = |p: &Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    for (drop, rel) in [
        (&a, "form=screening/period=2018-03/org=NGO01"),
        (&b, "form=screening/period=2018-03/org=NGO02"),
        (&c, "form=screening/period=2018-04/org=NGO01"),
    ] {
        let filed = store
            .join("drops")
            .join(rel)
            .join(format!("{}.parquet", sha(drop)));
        assert_eq!(std::fs::read(&filed).unwrap(), std::fs::read(drop).unwrap());
    }
    let l = ledger(&store);
    assert_eq!(
        outcomes(&store),
        ["epoch", "accepted", "accepted", "accepted"]
    );
    let e = &l[1];
    assert_eq!(e["sha256"], sha(&a));
    assert_eq!(e["form"], "screening");
    assert_eq!(e["org"], "NGO01");
    assert_eq!(e["period"], "2018-03");
    assert_eq!(e["rows"], 3);
    assert_eq!(e["rejected_rows"], 0);
    assert_eq!(e["fingerprint"], f.key.fingerprint());
    assert_eq!(e["source"], "screening_NGO01_2018-03.parquet");
    assert!(e["received"].as_str().unwrap().ends_with('Z'));

    // The same files again: only `duplicate` entries, no file changes.
    let before = tree(&store.join("drops"));
    let r = ingest(&f, &[&a, &b, &c]);
    r.ok();
    assert!(r.stdout.contains("3 duplicate"), "{}", r.stdout);
    assert_eq!(tree(&store.join("drops")), before);
    assert_eq!(
        outcomes(&store)[4..],
        ["duplicate", "duplicate", "duplicate"]
    );
    // Twice in one run: the second is a duplicate.
    let d = f.drop("NGO03", "2018-03", 1, "a");
    let r = ingest(&f, &[&d, &d]);
    r.ok();
    assert_eq!(outcomes(&store)[7..], ["accepted", "duplicate"]);
    f.w.run(&["store", "verify", "store"]).ok();
}

#[test]
fn a_newer_drop_supersedes_the_older_one_which_stays_filed() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let v1 = f.drop("NGO01", "2018-03", 2, "v1");
    ingest(&f, &[&v1]).ok();
    // The NGO corrects its month and sends it again (made later).
    let v2_made = f.drop("NGO01", "2018-03", 4, "v2");
    let v2 = f.w.path("v2.parquet");
    rewrite_drop(
        &v2_made,
        &v2,
        |m| {
            m.insert("safetally.created".into(), "2030-01-02T00:00:00Z".into());
        },
        |b| b,
    );
    let r = ingest(&f, &[&v2]);
    r.ok();
    assert!(
        r.stdout.contains("1 earlier drop(s) superseded"),
        "{}",
        r.stdout
    );
    let l = ledger(&store);
    assert_eq!(
        outcomes(&store),
        ["epoch", "accepted", "accepted", "superseded"]
    );
    assert_eq!(l[3]["sha256"], l[1]["sha256"]);
    assert_eq!(l[3]["by"], l[2]["sha256"]);
    // Both files are still there.
    for e in [&l[1], &l[2]] {
        assert!(store.join(e["path"].as_str().unwrap()).is_file());
    }
    // An older version arriving late is filed but not current.
    let v0_made = f.drop("NGO01", "2018-03", 7, "v0");
    let v0 = f.w.path("v0.parquet");
    rewrite_drop(
        &v0_made,
        &v0,
        |m| {
            m.insert("safetally.created".into(), "2018-04-01T00:00:00Z".into());
        },
        |b| b,
    );
    let r = ingest(&f, &[&v0, &v1]);
    r.ok();
    let l = ledger(&store);
    assert_eq!(l[4]["outcome"], "superseded");
    assert_eq!(l[4]["by"], l[2]["sha256"]);
    assert_eq!(l[5]["outcome"], "duplicate");
    let r = f.w.run(&["store", "status", "store", "--json"]);
    r.ok();
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let cell = &m[0]["orgs"][0]["cells"][0];
    assert_eq!(cell["status"], "sent");
    assert_eq!(cell["rows"], 4, "the current drop is v2");
    assert_eq!(cell["versions"], 3);
    f.w.run(&["store", "verify", "store"]).ok();
}

/// Each refusal, offered in one run with good drops around it.
#[test]
fn every_refusal_reason_is_recorded_and_the_good_drops_still_go_in() {
    let f = Fleet::new();
    f.w.write(
        "members.toml",
        "[members]\nNGO01 = \"Harbour Light\"\nNGO02 = \"Second Shelter\"\n",
    );
    let store = init(&f, &["--members", "members.toml"]);
    let good1 = f.drop("NGO01", "2018-03", 2, "g");
    let good2 = f.drop("NGO02", "2018-03", 2, "g");
    let base = f.drop("NGO01", "2018-04", 3, "g");
    let bytes = std::fs::read(&base).unwrap();
    let bad = |name: &str| f.w.path(&format!("bad/{name}.parquet"));
    std::fs::create_dir_all(f.w.path("bad")).unwrap();
    std::fs::write(bad("text"), "case_ref,family_name\n1,x\n").unwrap();
    std::fs::write(bad("truncated"), &bytes[..bytes.len() - 100]).unwrap();
    let meta = |name: &str, key: &str, value: &str| {
        let (k, v) = (format!("safetally.{key}"), value.to_string());
        rewrite_drop(
            &base,
            &bad(name),
            |m| {
                m.insert(k, v);
            },
            |b| b,
        );
    };
    rewrite_drop(&base, &bad("no_metadata"), |m| m.clear(), |b| b);
    meta("rows", "rows", "4");
    meta("period", "period", "2018-05");
    meta("bad_period", "period", "2018-13");
    meta("schema_version", "schema_version", "99");
    meta("format_version", "format_version", "9");
    meta("normaliser", "normaliser_version", "0");
    meta("form", "form", "census");
    meta("other_key", "key_fingerprint", "0000-1111-2222-3333");
    meta("not_member", "org", "NGO99");
    rewrite_drop(
        &base,
        &bad("identity"),
        |_| {},
        |b| {
            use std::sync::Arc;
            let mut fields: Vec<_> = b.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(arrow_schema::Field::new(
                "passport_number",
                arrow_schema::DataType::Utf8,
                true,
            )));
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(arrow_array::StringArray::from(vec![
                "x";
                b.num_rows()
            ])));
            arrow_array::RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), cols)
                .unwrap()
        },
    );
    rewrite_drop(
        &base,
        &bad("bad_code"),
        |_| {},
        |b| {
            let i = b.schema().index_of("outcome").unwrap();
            let mut cols = b.columns().to_vec();
            cols[i] =
                std::sync::Arc::new(arrow_array::StringArray::from(vec!["maybe"; b.num_rows()]));
            arrow_array::RecordBatch::try_new(b.schema(), cols).unwrap()
        },
    );
    rewrite_drop(
        &base,
        &bad("same_record_twice"),
        |_| {},
        |b| {
            use arrow_array::Array;
            let keys = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::FixedSizeBinaryArray>()
                .unwrap();
            let mut values: Vec<Vec<u8>> =
                (0..keys.len()).map(|i| keys.value(i).to_vec()).collect();
            values[1] = values[0].clone();
            let mut cols = b.columns().to_vec();
            cols[0] = std::sync::Arc::new(
                arrow_array::FixedSizeBinaryArray::try_from_iter(values.into_iter()).unwrap(),
            );
            arrow_array::RecordBatch::try_new(b.schema(), cols).unwrap()
        },
    );
    let cases: &[(&str, &str)] = &[
        ("text", "not a readable Parquet file"),
        ("truncated", "not a readable Parquet file"),
        ("no_metadata", "not a safetally drop"),
        ("rows", "metadata says 4 rows but the file holds 3"),
        ("period", "is not the drop's period 2018-05"),
        ("bad_period", "2018-13"),
        ("schema_version", "schema version 99 is not known"),
        ("format_version", "drop format version 9 is not known"),
        ("normaliser", "normaliser version 0 is not known"),
        ("form", "census"),
        ("other_key", "but the store's current key is"),
        ("not_member", "org NGO99 is not on the store's member list"),
        ("identity", "holds the identity column passport_number"),
        ("bad_code", "outcome holds a value its form does not allow"),
        ("same_record_twice", "two rows share a record_key"),
    ];
    let missing = f.w.path("bad/not_there.parquet");
    let mut offered: Vec<PathBuf> = vec![good1.clone()];
    offered.extend(cases.iter().map(|(n, _)| bad(n)));
    offered.push(missing);
    offered.push(good2.clone());
    let r = ingest(&f, &offered.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    assert_eq!(r.code, 1, "{}", r.stdout);
    let l = ledger(&store);
    // epoch, good1, the refusals, the missing file, good2.
    assert_eq!(l.len(), 1 + 1 + cases.len() + 1 + 1, "{}", r.stdout);
    assert_eq!(l[1]["outcome"], "accepted");
    for (i, (name, reason)) in cases.iter().enumerate() {
        let e = &l[2 + i];
        assert_eq!(e["outcome"], "refused", "{name}");
        let got = e["reason"].as_str().unwrap();
        assert!(got.contains(reason), "{name}: {got}");
        assert!(
            r.stdout.contains(&format!("refused     {}", s(&bad(name)))),
            "{name}: {}",
            r.stdout
        );
    }
    assert!(
        l[2 + cases.len()]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot read")
    );
    assert_eq!(l.last().unwrap()["outcome"], "accepted");
    // A refusal that could read the metadata records it.
    let other = &l[2 + cases.iter().position(|(n, _)| *n == "other_key").unwrap()];
    assert_eq!(other["org"], "NGO01");
    assert_eq!(other["fingerprint"], "0000-1111-2222-3333");
    // Refused files are not filed.
    assert_eq!(tree(&store.join("drops")).len(), 2);
    f.w.run(&["store", "verify", "store"]).ok();
}

#[test]
fn the_first_drop_sets_the_key_epoch_and_rotate_starts_a_new_one() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let a = f.drop("NGO01", "2018-03", 1, "a");
    ingest(&f, &[&a]).ok();
    // A drop made with another key is refused.
    let other = Fleet::new();
    let o = other.drop("NGO02", "2018-03", 1, "o");
    let r = ingest(&f, &[&o]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("the NGO must pseudonymise again"),
        "{}",
        r.stdout
    );
    // Rotate to the other key: its drops go in, the first key's are refused.
    other.key.write_new(&f.w.path("new.key")).unwrap();
    f.w.run(&["store", "rotate", "store", "--key", "new.key"])
        .ok();
    ingest(&f, &[&o]).ok();
    let b = f.drop("NGO03", "2018-03", 1, "b");
    let r = ingest(&f, &[&b]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("the key of epoch 1"), "{}", r.stdout);
    let l = ledger(&store);
    let epochs: Vec<_> = l.iter().filter(|e| e["outcome"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[0]["fingerprint"], f.key.fingerprint());
    assert_eq!(epochs[1]["fingerprint"], other.key.fingerprint());
    assert_eq!(epochs[1]["epoch"], 2);
    // The same key twice is not a new epoch.
    let r = f.w.run(&["store", "rotate", "store", "--key", "key"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("already epoch 1"), "{}", r.stderr);
    // init can fix the epoch before any drop.
    let g = Fleet::new();
    let fp = g.key.fingerprint();
    g.w.run(&["store", "init", "store", "--fingerprint", &fp])
        .ok();
    let r = g.w.run(&["ingest", "--store", "store", s(&a)]);
    assert_eq!(r.code, 1, "{}", r.stdout);
}

#[test]
fn status_shows_who_sent_what_and_the_chase_list() {
    let f = Fleet::new();
    f.w.write(
        "members.toml",
        "[members]\nNGO01 = \"Harbour Light\"\nNGO02 = \"Second Shelter\"\nNGO03 = \"Third Way\"\n\
         NGO04 = { name = \"Fourth\", forms = [\"self_assessment\"] }\n",
    );
    init(&f, &["--members", "members.toml"]);
    let drops = [
        f.drop("NGO01", "2018-01", 5, "m"),
        f.drop("NGO01", "2018-02", 0, "m"),
        f.drop("NGO01", "2018-03", 2, "m"),
        f.drop("NGO02", "2018-01", 3, "m"),
        f.drop("NGO02", "2018-03", 1, "m"),
    ];
    ingest(&f, &drops.iter().map(|p| p.as_path()).collect::<Vec<_>>()).ok();
    // NGO03 sends February made with the wrong key.
    let other = Fleet::new();
    let wrong = other.drop("NGO03", "2018-02", 1, "x");
    assert_eq!(ingest(&f, &[&wrong]).code, 1);

    let r =
        f.w.run(&["store", "status", "store", "--form", "screening", "--json"]);
    r.ok();
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let m = &m[0];
    assert_eq!(
        m["periods"],
        serde_json::json!(["2018-01", "2018-02", "2018-03"])
    );
    let grid: Vec<Vec<String>> = m["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["cells"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| match c["status"].as_str().unwrap() {
                    "sent" => c["rows"].to_string(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    assert_eq!(
        grid,
        [
            ["5", "0", "2"],
            ["3", "missing", "1"],
            ["missing", "refused", "missing"]
        ]
    );
    assert_eq!(m["orgs"][2]["name"], "Third Way");
    // NGO04 sends only self-assessments: not in the screening matrix.
    assert_eq!(m["orgs"].as_array().unwrap().len(), 3);
    assert_eq!(m["sent"], 5);
    let missing: Vec<String> = m["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| format!("{} {} {}", x["org"], x["period"], x["status"]).replace('"', ""))
        .collect();
    assert_eq!(
        missing,
        [
            "NGO02 2018-02 missing",
            "NGO03 2018-01 missing",
            "NGO03 2018-02 refused",
            "NGO03 2018-03 missing"
        ]
    );
    // The text matrix says the same for people.
    let r =
        f.w.run(&["store", "status", "store", "--form", "screening"]);
    r.ok();
    assert!(
        r.stdout
            .contains("3 NGOs x 3 months (2018-01 to 2018-03); 5 drops in, 4 to chase"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("NGO03 (Third Way): 2018-01, 2018-02 (refused), 2018-03"),
        "{}",
        r.stdout
    );
    let row = r.stdout.lines().find(|l| l.starts_with("NGO02")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["NGO02", "3", "--", "1"]
    );
    // --from/--to widen the window.
    let r = f.w.run(&[
        "store",
        "status",
        "store",
        "--form",
        "screening",
        "--from",
        "2017-12",
        "--json",
    ]);
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(m[0]["periods"][0], "2017-12");
    assert_eq!(m[0]["missing"].as_array().unwrap().len(), 7);
}

#[test]
fn verify_finds_tampered_missing_and_unexpected_files_and_an_edited_ledger() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let drops = [
        f.drop("NGO01", "2018-03", 2, "t"),
        f.drop("NGO02", "2018-03", 2, "t"),
    ];
    ingest(&f, &[&drops[0], &drops[1]]).ok();
    let r = f.w.run(&["store", "verify", "store"]);
    r.ok();
    assert!(
        r.stdout
            .contains("store OK: 3 ledger entries, 2 drops filed (2 current)"),
        "{}",
        r.stdout
    );
    let l = ledger(&store);
    let first = store.join(l[1]["path"].as_str().unwrap());
    let second = store.join(l[2]["path"].as_str().unwrap());
    // Tamper with one byte of one file, remove the other, add a stranger.
    let mut bytes = std::fs::read(&first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    std::fs::remove_file(&second).unwrap();
    f.w.write("store/drops/form=screening/notes.txt", "hello");
    let r = f.w.run(&["store", "verify", "store"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("has changed since it was filed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("is missing (ledger entry 3)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("notes.txt is not in the ledger"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("store NOT OK: 3 problem(s)"),
        "{}",
        r.stdout
    );
    // An edited ledger line breaks the chain.
    let g = Fleet::new();
    let store = init(&g, &[]);
    let a = g.drop("NGO01", "2018-03", 2, "t");
    let c = g.drop("NGO03", "2018-03", 1, "t");
    g.w.run(&["ingest", "--store", "store", s(&a), s(&c)]).ok();
    let text = std::fs::read_to_string(store.join("ledger.jsonl")).unwrap();
    std::fs::write(
        store.join("ledger.jsonl"),
        text.replace("\"rows\":2", "\"rows\":3"),
    )
    .unwrap();
    let r = g.w.run(&["store", "verify", "store"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("ledger line 3: does not follow the line before it"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("ledger entry 2 says rows 3 but the drop says 2"),
        "{}",
        r.stdout
    );
    // And ingest refuses to build on a damaged ledger.
    let b = g.drop("NGO02", "2018-03", 1, "t");
    let r = g.w.run(&["ingest", "--store", "store", s(&b)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("ledger is damaged"), "{}", r.stderr);
}

#[test]
fn the_next_command_cleans_what_an_interrupted_ingest_left() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let a = f.drop("NGO01", "2018-03", 2, "r");
    let b = f.drop("NGO02", "2018-03", 2, "r");
    ingest(&f, &[&a]).ok();
    // What a kill leaves: a file half-written in .tmp, a drop renamed into
    // place but not recorded, a ledger line cut short.
    f.w.write("store/.tmp/abc.parquet.tmp", "half");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&b).unwrap()))
    };
    let orphan = f.w.path(&format!(
        "store/drops/form=screening/period=2018-03/org=NGO02/{sha}.parquet"
    ));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::copy(&b, &orphan).unwrap();
    let mut text = std::fs::read(store.join("ledger.jsonl")).unwrap();
    text.extend_from_slice(b"{\"seq\":3,\"prev\":\"ab");
    std::fs::write(store.join("ledger.jsonl"), text).unwrap();

    let r = f.w.run(&["store", "verify", "store"]);
    r.ok();
    assert!(
        r.stderr
            .contains("recovered: removed an incomplete last ledger line"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("recovered: removed 1 unfinished file"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("recovered: filed drops/form=screening"),
        "{}",
        r.stderr
    );
    assert!(!f.w.path("store/.tmp/abc.parquet.tmp").exists());
    let l = ledger(&store);
    assert_eq!(l.len(), 3);
    assert_eq!(l[2]["outcome"], "accepted");
    assert_eq!(l[2]["recovered"], true);
    assert_eq!(l[2]["sha256"], sha.as_str());
    // Offering it again changes nothing.
    let r = ingest(&f, &[&b]);
    r.ok();
    assert!(r.stdout.contains("1 duplicate"), "{}", r.stdout);
}

#[test]
fn a_second_command_waits_for_the_lock_or_refuses_with_no_wait() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let a = f.drop("NGO01", "2018-03", 1, "l");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(store.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    let r = f.w.run(&["ingest", "--store", "store", "--no-wait", s(&a)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is in use by"), "{}", r.stderr);
    assert!(ledger(&store).is_empty());
    let mut child =
        f.w.cmd()
            .args(["ingest", "--store", "store", s(&a)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "it waits for the lock");
    assert!(ledger(&store).is_empty());
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for it to finish"));
    assert_eq!(outcomes(&store), ["epoch", "accepted"]);
}

#[test]
fn init_refuses_a_used_folder_a_bad_member_list_and_open_refuses_a_non_store() {
    let f = Fleet::new();
    f.w.write("full/x.txt", "x");
    let r = f.w.run(&["store", "init", "full"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
    f.w.write("m.toml", "[members]\n\"ngo 1\" = \"x\"\n");
    let r = f.w.run(&["store", "init", "s1", "--members", "m.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not an org code"), "{}", r.stderr);
    assert!(!f.w.path("s1").exists(), "nothing is created");
    f.w.write("m2.toml", "NGO01 = \"x\"\n");
    let r = f.w.run(&["store", "init", "s1", "--members", "m2.toml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("under [members]"), "{}", r.stderr);
    let r = f.w.run(&["store", "init", "s1", "--fingerprint", "abc"]);
    assert_eq!(r.code, 2);
    f.w.run(&["store", "init", "s1"]).ok();
    let r = f.w.run(&["store", "init", "s1"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("already a store"), "{}", r.stderr);
    let a = f.drop("NGO01", "2018-03", 1, "i");
    let r = f.w.run(&["ingest", "--store", "full", s(&a)]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("is not a safetally store"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_folder_of_drops_can_be_offered_whole() {
    let f = Fleet::new();
    let store = init(&f, &[]);
    let a = f.drop("NGO01", "2018-03", 1, "inbox");
    f.drop("NGO02", "2018-03", 1, "inbox");
    f.w.write("made/inbox/readme.txt", "not a drop");
    let r =
        f.w.run(&["ingest", "--store", "store", s(a.parent().unwrap())]);
    r.ok();
    assert_eq!(outcomes(&store), ["epoch", "accepted", "accepted"]);
}

/// A copy of `new` (a drop of format 2) as format 1 wrote it: no encoding
/// columns, format version 1.
fn as_format_1(f: &Fleet, new: &Path) -> PathBuf {
    let old = f.w.path(&format!(
        "{}.v1.parquet",
        new.file_stem().unwrap().to_str().unwrap()
    ));
    crate::util::rewrite_drop(
        new,
        &old,
        |m| {
            m.insert("safetally.format_version".into(), "1".into());
            m.remove("safetally.encoding_rules");
        },
        |b| {
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| {
                    !safetally::drop::ENCODING_COLUMNS
                        .contains(&b.schema().field(i).name().as_str())
                })
                .collect();
            b.project(&keep).unwrap()
        },
    );
    old
}

/// Reports January 2018 of `store` into `out` (with `extra` flags), and
/// expects it to succeed.
fn report_january(out: &Path, f: &Fleet, store: &Path, extra: &[&str]) {
    let mut args = vec![
        "report",
        "--store",
        s(store),
        "--from",
        "2018-01",
        "--to",
        "2018-01",
        "--out",
        s(out),
    ];
    args.extend(extra);
    f.w.run(&args).ok();
}

/// Drops of format 1 (no encoding columns) are still read: checked,
/// ingested and reported on (linked by exact keys only).
#[test]
fn drops_of_format_1_without_encodings_are_still_read() {
    let f = Fleet::new();
    let new = f.drop("NGO01", "2018-01", 20, "v2");
    let old = as_format_1(&f, &new);
    let checked = safetally::drop::check(&old, None).unwrap();
    assert_eq!(checked.meta.format_version, "1");
    assert_eq!(checked.meta.rows, 20);
    let store = init(&f, &[]);
    ingest(&f, &[&old]).ok();
    let out = f.w.path("report");
    report_january(&out, &f, &store, &[]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["linkage"]["screening"]["records"], 20);
    assert!(manifest["linkage"]["screening"].get("fuzzy").is_none());
}

/// The records views show every row of the window's drops, of either
/// format: their schema is the columns every format has, given to the
/// query engine rather than read from each drop, so a drop of format 2
/// (with encoding columns) and one of format 1 (without) read alike. A
/// figure counting rows by organisation over `screening_records` guards
/// it.
#[test]
fn the_records_view_reads_drops_of_both_formats() {
    let f = Fleet::new();
    let v2 = f.drop("NGO01", "2018-01", 20, "v2");
    let v1 = as_format_1(&f, &v2);
    let other = f.drop("NGO02", "2018-01", 7, "other");
    let store = init(&f, &[]);
    ingest(&f, &[&v1, &other]).ok();
    f.w.write(
        "extra/records_by_org.sql",
        "-- title: Records, by organisation\n-- dimensions: org\n-- counts: drop rows\n\
         SELECT org, count(*) AS count FROM screening_records GROUP BY org\n",
    );
    f.w.write("cfg.toml", "min_count = 1\nqueries = \"extra\"\n");
    let out = f.w.path("report");
    report_january(&out, &f, &store, &["--config", s(&f.w.path("cfg.toml"))]);
    let mut counts = std::collections::BTreeMap::new();
    let mut r = csv::Reader::from_path(out.join("tables/records_by_org.csv")).unwrap();
    for row in r.records() {
        let row = row.unwrap();
        counts.insert(row[0].to_string(), row[1].to_string());
    }
    let want: std::collections::BTreeMap<String, String> =
        [("NGO01", "20"), ("NGO02", "7"), ("Total", "27")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(counts, want);
}

/// A filed drop whose file no longer holds the rows the ledger recorded
/// (here replaced by hand with another drop) is refused by the report,
/// which names the file and says how to check the store; no report is
/// written, and the store is left as it was.
#[test]
fn a_filed_drop_holding_other_rows_than_the_ledger_says_is_refused() {
    let f = Fleet::new();
    let filed_drop = f.drop("NGO01", "2018-01", 20, "a");
    let other = f.drop("NGO02", "2018-01", 7, "b");
    let store = init(&f, &[]);
    ingest(&f, &[&filed_drop]).ok();
    let folder = store.join("drops/form=screening/period=2018-01/org=NGO01");
    let filed: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(filed.len(), 1);
    std::fs::copy(&other, &filed[0]).unwrap();
    let ledger = std::fs::read(store.join("ledger.jsonl")).unwrap();
    let out = f.w.path("report");
    let r = f.w.run(&[
        "report",
        "--store",
        s(&store),
        "--from",
        "2018-01",
        "--to",
        "2018-01",
        "--out",
        s(&out),
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    let name = filed[0].file_name().unwrap().to_str().unwrap();
    assert!(r.stderr.contains(name), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("holds 7 rows, and the store's ledger says 20"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("safetally store verify"), "{}", r.stderr);
    assert!(!out.exists());
    assert_eq!(std::fs::read(store.join("ledger.jsonl")).unwrap(), ledger);
}
