//! Drops damaged on their way: byte-mutated copies offered to `ingest` are
//! refused or hold exactly what the NGO wrote, never a panic; the content
//! digest and what `check` prints; readers that do not depend on the
//! embedded Arrow schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{DropData, Fleet, ledger, rewrite_drop};

/// What a reader decodes from a drop: its safetally metadata and its rows.
fn content(path: &Path) -> (BTreeMap<String, String>, arrow_array::RecordBatch) {
    let d = DropData::read(path);
    (d.meta, d.batch)
}

/// `bytes` with `1..=32` bytes changed at random places (each to another
/// value).
fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=32) {
        let at = rng.random_range(0..out.len());
        out[at] ^= rng.random_range(1..=255u8);
    }
    out
}

#[test]
fn a_thousand_damaged_copies_are_refused_or_identical_and_good_drops_beside_them_are_filed() {
    let f = Fleet::new();
    let base = f.drop("NGO01", "2018-03", 20, "base");
    let good1 = f.drop("NGO02", "2018-03", 3, "good");
    let good2 = f.drop("NGO03", "2018-04", 3, "good");
    let original = content(&base);
    let bytes = std::fs::read(&base).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    std::fs::create_dir_all(f.w.path("damaged")).unwrap();
    let copies: Vec<PathBuf> = (0..1000)
        .map(|i| {
            let p = f.w.path(&format!("damaged/copy-{i:04}.parquet"));
            std::fs::write(&p, mutate(&bytes, &mut rng)).unwrap();
            p
        })
        .collect();
    f.w.run(&["store", "init", "store"]).ok();
    let mut args: Vec<String> = vec!["ingest".into(), "--store".into(), "store".into()];
    args.push(good1.to_str().unwrap().into());
    args.extend(copies.iter().map(|p| p.to_str().unwrap().to_string()));
    args.push(good2.to_str().unwrap().into());
    let r =
        f.w.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Refusals exit 1; a panic would be 101.
    assert_eq!(r.code, 1, "stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("internal error"), "{}", r.stderr);
    let entries = ledger(&f.w.path("store"));
    let by_source = |name: &str| -> Vec<&serde_json::Value> {
        entries
            .iter()
            .filter(|e| e["source"].as_str() == Some(name))
            .collect()
    };
    for good in [&good1, &good2] {
        let name = good.file_name().unwrap().to_str().unwrap();
        let e = by_source(name);
        assert_eq!(e.len(), 1, "{name}");
        assert_eq!(e[0]["outcome"], "accepted", "{name}");
    }
    let (mut refused, mut identical) = (0, 0);
    for copy in &copies {
        let name = copy.file_name().unwrap().to_str().unwrap();
        let e = by_source(name);
        assert_eq!(e.len(), 1, "{name}: one entry");
        let e = e[0];
        match e["outcome"].as_str().unwrap() {
            "refused" => {
                let reason = e["reason"].as_str().unwrap();
                assert!(!reason.contains("internal error"), "{name}: {reason}");
                refused += 1;
            }
            "accepted" | "superseded" | "duplicate" => {
                let filed = f.w.path("store").join(e["path"].as_str().unwrap());
                assert!(
                    content(&filed) == original,
                    "{name} was filed with content other than the NGO's"
                );
                identical += 1;
            }
            other => panic!("{name}: {other}"),
        }
    }
    assert_eq!(refused + identical, copies.len());
    assert!(refused > 900, "{refused} refused");
    eprintln!("1,000 damaged copies: {refused} refused, {identical} filed with identical content");
    f.w.run(&["store", "verify", "store"]).ok();
}

#[test]
fn a_damaged_drop_is_refused_with_a_reason_that_asks_for_it_again() {
    let f = Fleet::new();
    let base = f.drop("NGO01", "2018-03", 20, "base");
    let meta = DropData::read(&base).meta;
    assert_eq!(meta["safetally.format_version"], "3");
    assert_eq!(meta[safetally::digest::DIGEST_KEY].len(), 64);
    assert!(
        !meta.contains_key("ARROW:schema"),
        "a format 3 drop carries no embedded Arrow schema"
    );
    // One flipped byte in the middle of the data.
    let mut bytes = std::fs::read(&base).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x20;
    let damaged = f.w.write("damaged.parquet", &bytes);
    let r = f.w.run(&["check", damaged.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("damaged on its way"), "{}", r.stdout);
    assert!(r.stdout.contains("send it again"), "{}", r.stdout);
    // A format 3 drop without its digest is refused too.
    let stripped = f.w.path("stripped.parquet");
    rewrite_drop(&base, &stripped, |_| {}, |b| b);
    let with_digest = DropData::read(&stripped).meta;
    assert!(with_digest.contains_key(safetally::digest::DIGEST_KEY));
    let no_digest = f.w.path("no_digest.parquet");
    {
        // The rewrite stamps a digest for a format 3 drop; write one by hand
        // without it.
        use parquet::file::metadata::KeyValue;
        let d = DropData::read(&base);
        let kv: Vec<KeyValue> = d
            .meta
            .iter()
            .filter(|(k, _)| *k != safetally::digest::DIGEST_KEY)
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(kv))
            .build();
        let file = std::fs::File::create(&no_digest).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, d.batch.schema(), Some(props)).unwrap();
        w.write(&d.batch).unwrap();
        w.close().unwrap();
    }
    let r = f.w.run(&["check", no_digest.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("must carry a content digest"),
        "{}",
        r.stdout
    );
}

#[test]
fn check_prints_the_sha256_and_whether_the_content_was_verified() {
    let f = Fleet::new();
    let new = f.drop("NGO01", "2018-03", 4, "v3");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&new).unwrap()))
    };
    let old = f.w.path("v2.parquet");
    rewrite_drop(
        &new,
        &old,
        |m| {
            m.insert("safetally.format_version".into(), "2".into());
        },
        |b| b,
    );
    let r =
        f.w.run(&["check", new.to_str().unwrap(), old.to_str().unwrap()]);
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].contains(&format!("sha256={sha}")), "{}", lines[0]);
    assert!(lines[0].ends_with("content=verified"), "{}", lines[0]);
    assert!(
        lines[1].ends_with("content=unchecked (format 2 has no digest)"),
        "{}",
        lines[1]
    );
}

/// The panic seen before: ingest read each drop's embedded Arrow schema,
/// and a garbage one panicked inside arrow-ipc. The Parquet schema is
/// enough, so such a drop (of format 2, which had the blob) is read.
#[test]
fn a_drop_with_a_garbage_embedded_arrow_schema_is_read_from_its_parquet_schema() {
    let f = Fleet::new();
    let new = f.drop("NGO01", "2018-03", 4, "v3");
    let old = f.w.path("garbage.parquet");
    rewrite_drop(
        &new,
        &old,
        |m| {
            m.insert("safetally.format_version".into(), "2".into());
            // Base64 of bytes that are no Arrow IPC schema.
            m.insert("ARROW:schema".into(), "/////wAAAAD//////////w==".into());
        },
        |b| b,
    );
    let checked = safetally::drop::check(&old, None).unwrap();
    assert_eq!(checked.meta.rows, 4);
    assert_eq!(checked.meta.content_sha256, None);
    f.w.run(&["store", "init", "store"]).ok();
    f.w.run(&["ingest", "--store", "store", old.to_str().unwrap()])
        .ok();
}

/// A panic inside a reader becomes the drop's refusal, and the message
/// names where it happened, never what it said.
#[test]
fn a_panic_while_reading_becomes_an_error_that_names_no_value() {
    let r = safetally::guard::catch(|| -> u32 { panic!("Family0 Ana 1991") });
    let e = r.unwrap_err().to_string();
    assert!(!e.contains("Ana") && !e.contains("Family0"), "{e}");
}

/// An input fuzzing found (tests/fuzz/drop/): damaged definition levels
/// that make the Parquet decoder (arrow-rs 59) panic. The panic stays
/// inside that drop: it is refused, and a good drop offered with it is
/// filed.
#[test]
fn a_drop_that_makes_the_parquet_decoder_panic_is_refused_and_the_run_goes_on() {
    let crash = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/drop/parquet-def-levels-out-of-bounds.parquet");
    let bytes = std::fs::read(&crash).unwrap();
    let refused = safetally::drop::inspect(bytes::Bytes::from(bytes.clone())).unwrap_err();
    assert!(
        refused.reason.contains("internal error"),
        "{}",
        refused.reason
    );
    let f = Fleet::new();
    let good = f.drop("NGO01", "2018-03", 3, "good");
    let offered = f.w.write("inbox/damaged.parquet", &bytes);
    f.w.run(&["store", "init", "store"]).ok();
    let r = f.w.run(&[
        "ingest",
        "--store",
        "store",
        offered.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "stderr:\n{}", r.stderr);
    let entries = ledger(&f.w.path("store"));
    let outcome = |source: &str| {
        entries
            .iter()
            .find(|e| e["source"] == source)
            .map(|e| e["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome("damaged.parquet").as_deref(), Some("refused"));
    assert_eq!(
        outcome(good.file_name().unwrap().to_str().unwrap()).as_deref(),
        Some("accepted")
    );
    // The binary's hook says where, and prints no panic message.
    let reason = entries
        .iter()
        .find(|e| e["source"] == "damaged.parquet")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("internal error at "), "{reason}");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    f.w.run(&["store", "verify", "store"]).ok();
}
