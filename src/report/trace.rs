//! `safetally link`: how each record of a window was linked into persons,
//! as a Parquet file an NGO can trace its rows with (one row per record:
//! the drop's SHA-256, the row's position in that drop, the person, and
//! whether an exact key or a fuzzy score linked it), and as statistics
//! (cluster sizes, exact and fuzzy links, weight histograms).
//!
//! Only positions, person numbers, link kinds and weights are written:
//! never a key, an encoding or an identity value.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};

use super::FormLinkage;
use super::fuzzy::cluster_sizes;
use crate::error::{Error, Result};

/// How a record joined its person.
pub fn link_kind(l: &FormLinkage, i: usize) -> &'static str {
    let t = &l.trace;
    if t.exact[i] {
        "exact"
    } else if l.records_per_person[t.person[i] as usize] > 1 {
        "fuzzy"
    } else {
        "alone"
    }
}

/// The records of every form in file order: by form, then drop (in the
/// window's order: period, then organisation), then row.
fn ordered(l: &FormLinkage) -> Vec<usize> {
    let rank: rustc_hash::FxHashMap<u32, usize> = l
        .drops
        .iter()
        .enumerate()
        .map(|(i, d)| (d.ledger_seq as u32, i))
        .collect();
    let t = &l.trace;
    let mut order: Vec<usize> = (0..t.person.len()).collect();
    order.sort_unstable_by_key(|&i| (rank[&t.drop_seq[i]], t.pos[i]));
    order
}

/// The trace as one Arrow batch: `form`, `org`, `period`, `drop_sha256`,
/// `drop_row` (0 for a drop's first row), `person_id` (as in the report's
/// persons views, per form), `link` (`exact`, `fuzzy` or `alone`) and
/// `score` (the match weight of the strongest fuzzy link at the record,
/// empty when none).
pub fn trace_batch(links: &[FormLinkage]) -> Result<RecordBatch> {
    let mut form = Vec::new();
    let mut org = Vec::new();
    let mut period = Vec::new();
    let mut sha = Vec::new();
    let mut row = Vec::new();
    let mut person = Vec::new();
    let mut kind = Vec::new();
    let mut score = Vec::new();
    for l in links {
        let by_seq: rustc_hash::FxHashMap<u32, &super::InputDrop> =
            l.drops.iter().map(|d| (d.ledger_seq as u32, d)).collect();
        let t = &l.trace;
        for i in ordered(l) {
            let d = by_seq[&t.drop_seq[i]];
            form.push(l.form.code());
            org.push(d.org.as_str());
            period.push(d.period.as_str());
            sha.push(d.sha256.as_str());
            row.push(t.pos[i] as i64);
            person.push(t.person[i] as i64 + 1);
            kind.push(link_kind(l, i));
            score.push((!t.score[i].is_nan()).then_some(t.score[i] as f64));
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("form", DataType::Utf8, false),
        Field::new("org", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("drop_sha256", DataType::Utf8, false),
        Field::new("drop_row", DataType::Int64, false),
        Field::new("person_id", DataType::Int64, false),
        Field::new("link", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(form)),
            Arc::new(StringArray::from(org)),
            Arc::new(StringArray::from(period)),
            Arc::new(StringArray::from(sha)),
            Arc::new(Int64Array::from(row)),
            Arc::new(Int64Array::from(person)),
            Arc::new(StringArray::from(kind)),
            Arc::new(Float64Array::from(score)),
        ],
    )
    .map_err(|e| Error::Refused(e.to_string()))
}

/// Writes the trace to `path` (a temporary file beside it, renamed when
/// complete, so a failure leaves nothing half-written).
pub fn write_trace(path: &Path, links: &[FormLinkage]) -> Result<()> {
    let batch = trace_batch(links)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |e: std::io::Error| Error::io(format!("cannot write {}", path.display()), e);
    let tmp = tempfile::Builder::new()
        .prefix(".safetally-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    let props = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("safetally {}", env!("CARGO_PKG_VERSION")))
        .build();
    let file = tmp.reopen().map_err(io)?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    crate::drop::sync_dir(dir);
    Ok(())
}

/// Counts in bins of 2 (lower bounds).
fn histogram(weights: impl Iterator<Item = f64>) -> Vec<(i32, u64)> {
    let mut h = std::collections::BTreeMap::new();
    for w in weights {
        *h.entry((w / 2.0).floor() as i32 * 2).or_insert(0u64) += 1;
    }
    h.into_iter().collect()
}

fn bars(out: &mut String, h: &[(i32, u64)]) {
    let most = h.iter().map(|x| x.1).max().unwrap_or(1).max(1);
    for &(lo, n) in h {
        let bar = "#".repeat(((n * 40).div_ceil(most)) as usize);
        let _ = writeln!(out, "    [{lo:>4}, {:>4})  {n:>8}  {bar}", lo + 2);
    }
}

/// The statistics `link --stats` prints: per form, the records and
/// persons, the cluster-size distribution, how many links were exact and
/// how many fuzzy, and histograms of the fuzzy links' weights and of the
/// weights of all candidate pairs no exact key joins.
pub fn stats_text(links: &[FormLinkage]) -> String {
    let mut out = String::new();
    for l in links {
        let t = &l.trace;
        let records = t.person.len();
        let persons = l.records_per_person.len();
        let fuzzy_links = t.fuzzy_weights.len();
        let _ = writeln!(
            out,
            "{}: {records} records, {persons} persons",
            l.form.code()
        );
        let _ = writeln!(out, "  persons by number of records:");
        for (size, n) in cluster_sizes(&l.records_per_person) {
            let _ = writeln!(out, "    {size:>4} records: {n:>8} persons");
        }
        let exact_links = records - persons - fuzzy_links;
        let _ = writeln!(
            out,
            "  links: {} exact, {fuzzy_links} fuzzy (a person of n records is n - 1 links)",
            exact_links
        );
        let mut kinds = [0usize; 3];
        for i in 0..records {
            kinds[match link_kind(l, i) {
                "exact" => 0,
                "fuzzy" => 1,
                _ => 2,
            }] += 1;
        }
        let _ = writeln!(
            out,
            "  records: {} share an exact key with another, {} joined by fuzzy links only, {} alone",
            kinds[0], kinds[1], kinds[2]
        );
        match &l.stats.fuzzy {
            None => {
                let _ = writeln!(out, "  fuzzy linkage: off, or no drop carries encodings");
            }
            Some(f) => {
                let m = &f.model;
                let _ = writeln!(
                    out,
                    "  fuzzy model: fitted {}, match share {:.4}, threshold weight {:.2} \
                     (posterior {}), {} candidate pairs ({} already joined by exact keys), \
                     {} above the threshold, refused: {} passports differ, {} too few fields, \
                     {} chaining guard",
                    m.fitted,
                    m.match_share,
                    m.threshold_weight,
                    m.min_posterior,
                    f.candidate_pairs,
                    f.candidate_pairs_joined_by_exact_keys,
                    f.pairs_above_threshold,
                    f.refused_passports_differ,
                    f.refused_too_few_strong_fields,
                    f.refused_by_chaining_guard
                );
                if fuzzy_links > 0 {
                    let _ = writeln!(out, "  weights of the fuzzy links made:");
                    bars(&mut out, &histogram(t.fuzzy_weights.iter().copied()));
                }
                if !f.weight_histogram.is_empty() {
                    let _ = writeln!(out, "  weights of the candidate pairs no exact key joins:");
                    bars(&mut out, &f.weight_histogram);
                }
            }
        }
    }
    out
}
