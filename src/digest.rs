//! The content digest a drop of format 3 carries: SHA-256 over what a reader
//! decodes from it (every column's values, its columns' names and types,
//! the file's key-value metadata and `created_by`), in a canonical order
//! that does not depend on how the file splits rows into batches, pages or
//! row groups. Anyone can recompute it without the task-force key, so a
//! drop damaged on its way (e-mail, USB stick, shared folder) is told from
//! the one the NGO made. It guards against damage, not against a person
//! who edits a drop and stamps a new digest: that is what the key-bound
//! match keys and the store's ledger are for.
//!
//! The canonical form is specified in docs/drops.md ("Content digest") so
//! that it can be recomputed elsewhere. It hashes keyed columns only as
//! bytes: nothing here ever sees an identity value.

use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Schema};
use sha2::{Digest, Sha256};

/// The metadata key of the digest (hex SHA-256).
pub const DIGEST_KEY: &str = "safetally.content_sha256";

/// What starts the final hash: the name and version of the canonical form.
const DOMAIN: &[u8] = b"safetally content digest 1\0";

/// Bytes buffered per column before they are hashed.
const FLUSH: usize = 1 << 16;

/// A digest being computed over a file's batches, in file order.
pub struct ContentDigest {
    columns: Vec<ColumnHasher>,
    rows: u64,
}

#[derive(Default)]
struct ColumnHasher {
    sha: Sha256,
    buf: Vec<u8>,
}

impl ColumnHasher {
    fn flush_if_full(&mut self) {
        if self.buf.len() >= FLUSH {
            self.sha.update(&self.buf);
            self.buf.clear();
        }
    }

    /// Adds `rows` values of variable length: byte 0 for a null, else byte
    /// 1 and the sized value.
    fn sized_values<'a>(
        &mut self,
        rows: usize,
        valid: impl Fn(usize) -> bool,
        value: impl Fn(usize) -> &'a [u8],
    ) {
        for row in 0..rows {
            if valid(row) {
                self.buf.push(1);
                put_sized(&mut self.buf, value(row));
            } else {
                self.buf.push(0);
            }
            self.flush_if_full();
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.sha.update(&self.buf);
        self.sha.finalize().into()
    }
}

/// The stable name of a column type in the canonical form; `None` for a
/// type no drop has.
fn type_name(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::FixedSizeBinary(n) => format!("fixed_size_binary({n})"),
        DataType::Binary => "binary".to_string(),
        DataType::Utf8 => "utf8".to_string(),
        DataType::Boolean => "boolean".to_string(),
        _ => return None,
    })
}

/// Appends `bytes` with its length (4 bytes, little-endian) before it.
fn put_sized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl ContentDigest {
    /// A digest over a file of `columns` columns.
    pub fn new(columns: usize) -> Self {
        ContentDigest {
            columns: (0..columns).map(|_| ColumnHasher::default()).collect(),
            rows: 0,
        }
    }

    /// Adds a batch's rows. Each value is one byte 0 when null; otherwise
    /// byte 1 and the value: fixed-size bytes as they are, text and bytes
    /// with their length first, a yes/no as one byte 0 or 1. Errs (naming
    /// the column) on a type no drop has, or a batch of another width.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<(), String> {
        if batch.num_columns() != self.columns.len() {
            return Err(format!(
                "a batch of {} columns where the file has {}",
                batch.num_columns(),
                self.columns.len()
            ));
        }
        for (i, (h, col)) in self.columns.iter_mut().zip(batch.columns()).enumerate() {
            let any = col.as_any();
            let valid = |row: usize| col.is_valid(row);
            let unsupported = || {
                format!(
                    "column {} has the type {}, which no drop has",
                    batch.schema().field(i).name(),
                    col.data_type()
                )
            };
            match col.data_type() {
                DataType::FixedSizeBinary(_) => {
                    let a = any
                        .downcast_ref::<FixedSizeBinaryArray>()
                        .ok_or_else(unsupported)?;
                    for row in 0..a.len() {
                        if valid(row) {
                            h.buf.push(1);
                            h.buf.extend_from_slice(a.value(row));
                        } else {
                            h.buf.push(0);
                        }
                        h.flush_if_full();
                    }
                }
                DataType::Binary => {
                    let a = any.downcast_ref::<BinaryArray>().ok_or_else(unsupported)?;
                    h.sized_values(a.len(), valid, |row| a.value(row));
                }
                DataType::Utf8 => {
                    let a = any.downcast_ref::<StringArray>().ok_or_else(unsupported)?;
                    h.sized_values(a.len(), valid, |row| a.value(row).as_bytes());
                }
                DataType::Boolean => {
                    let a = any.downcast_ref::<BooleanArray>().ok_or_else(unsupported)?;
                    for row in 0..a.len() {
                        if valid(row) {
                            h.buf.extend_from_slice(&[1, a.value(row) as u8]);
                        } else {
                            h.buf.push(0);
                        }
                        h.flush_if_full();
                    }
                }
                _ => return Err(unsupported()),
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The digest (hex) of the batches added, under `schema` (the file's
    /// columns), `created_by` and `key_values` (the file's key-value
    /// metadata in any order, without the digest's own entry). Errs on a
    /// column type no drop has.
    pub fn finish(
        self,
        schema: &Schema,
        created_by: Option<&str>,
        key_values: &[(String, Option<String>)],
    ) -> Result<String, String> {
        if schema.fields().len() != self.columns.len() {
            return Err("the schema does not match the columns hashed".to_string());
        }
        let mut out = DOMAIN.to_vec();
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&(self.columns.len() as u32).to_le_bytes());
        for (field, h) in schema.fields().iter().zip(self.columns) {
            let ty = type_name(field.data_type()).ok_or_else(|| {
                format!(
                    "column {} has the type {}, which no drop has",
                    field.name(),
                    field.data_type()
                )
            })?;
            put_sized(&mut out, field.name().as_bytes());
            put_sized(&mut out, ty.as_bytes());
            out.push(field.is_nullable() as u8);
            out.extend_from_slice(&h.finish());
        }
        put_optional(&mut out, created_by);
        let mut kv: Vec<&(String, Option<String>)> = key_values.iter().collect();
        kv.sort();
        out.extend_from_slice(&(kv.len() as u32).to_le_bytes());
        for (k, v) in kv {
            put_sized(&mut out, k.as_bytes());
            put_optional(&mut out, v.as_deref());
        }
        Ok(hex::encode(Sha256::digest(&out)))
    }
}

/// Appends byte 0 for `None`, else byte 1 and the sized text.
fn put_optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_sized(out, s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;
    use std::sync::Arc;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::FixedSizeBinary(2), true),
            Field::new("t", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("x", DataType::Binary, false),
        ]))
    }

    fn batch(rows: std::ops::Range<usize>) -> RecordBatch {
        let k: Vec<Option<[u8; 2]>> = rows
            .clone()
            .map(|i| (i % 3 != 0).then_some([i as u8, 7]))
            .collect();
        let t: Vec<Option<String>> = rows
            .clone()
            .map(|i| (i % 4 != 1).then(|| "ab".repeat(i % 3)))
            .collect();
        let b: Vec<Option<bool>> = rows
            .clone()
            .map(|i| (i % 5 != 2).then_some(i % 2 == 0))
            .collect();
        let x: Vec<Vec<u8>> = rows.map(|i| vec![i as u8; i % 4]).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(k.into_iter(), 2).unwrap(),
                ),
                Arc::new(StringArray::from(t)),
                Arc::new(BooleanArray::from(b)),
                Arc::new(BinaryArray::from_iter_values(x)),
            ],
        )
        .unwrap()
    }

    fn digest(batches: &[RecordBatch], kv: &[(String, Option<String>)]) -> String {
        let mut d = ContentDigest::new(4);
        for b in batches {
            d.update(b).unwrap();
        }
        d.finish(&schema(), Some("safetally test"), kv).unwrap()
    }

    #[test]
    fn the_digest_does_not_depend_on_batches_or_metadata_order() {
        let kv = vec![
            ("safetally.a".to_string(), Some("1".to_string())),
            ("safetally.b".to_string(), None),
        ];
        let mut reversed = kv.clone();
        reversed.reverse();
        let whole = digest(&[batch(0..40)], &kv);
        assert_eq!(whole, digest(&[batch(0..13), batch(13..40)], &reversed));
        assert_eq!(whole.len(), 64);
    }

    #[test]
    fn any_change_of_a_value_a_null_a_key_or_a_row_changes_the_digest() {
        let kv = vec![("safetally.a".to_string(), Some("1".to_string()))];
        let base = digest(&[batch(0..40)], &kv);
        let mut seen = std::collections::HashSet::from([base.clone()]);
        // Fewer rows, other rows, other metadata, a value made null.
        assert!(seen.insert(digest(&[batch(0..39)], &kv)));
        assert!(seen.insert(digest(&[batch(1..41)], &kv)));
        assert!(seen.insert(digest(
            &[batch(0..40)],
            &[("safetally.a".to_string(), Some("2".to_string()))]
        )));
        assert!(seen.insert(digest(
            &[batch(0..40)],
            &[("safetally.a".to_string(), None)]
        )));
        let b = batch(0..40);
        let mut t: Vec<Option<String>> = b
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect();
        t[0] = None;
        let mut cols = b.columns().to_vec();
        cols[1] = Arc::new(StringArray::from(t));
        let nulled = RecordBatch::try_new(schema(), cols).unwrap();
        assert!(seen.insert(digest(&[nulled], &kv)));
    }

    #[test]
    fn a_column_of_a_type_no_drop_has_is_an_error_not_a_panic() {
        let s = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let b = RecordBatch::try_new(s, vec![Arc::new(arrow_array::Int32Array::from(vec![1]))])
            .unwrap();
        let mut d = ContentDigest::new(1);
        assert!(d.update(&b).unwrap_err().contains("column n"));
    }
}
