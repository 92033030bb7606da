//! The report's input: the store's current drops of the window, scanned by
//! DataFusion as Parquet, and the linked persons registered as views.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, FixedSizeBinaryArray, Int64Array, RecordBatch,
    StringArray, UInt8Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt8Type};
use datafusion::catalog::MemTable;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col, lit};
use futures::StreamExt;

use super::link::{Persons, Records, Rule, link};
use crate::error::{Error, Result};
use crate::pseudonymise::Period;
use crate::pseudonymise::country::countries;
use crate::pseudonymise::normalise::AGE_BANDS;
use crate::schema::{Form, Role, code_list};
use crate::store::ingest::resolve;
use crate::store::{State, Store};

/// One drop the report reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputDrop {
    /// The form.
    pub form: String,
    /// Org code.
    pub org: String,
    /// YYYY-MM.
    pub period: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Path in the store.
    pub path: String,
    /// Ledger sequence number of its filing.
    pub ledger_seq: u64,
    /// Rows.
    pub rows: u64,
}

/// The drops of a window: the current drop of every form, org and period
/// inside it. Refuses a window whose drops were made with more than one
/// key (their persons cannot be linked).
pub fn select(state: &State, from: Period, to: Period) -> Result<(Vec<InputDrop>, Option<String>)> {
    let mut out = Vec::new();
    let mut keys = BTreeSet::new();
    for (slot, (sha, f)) in state.current() {
        let Ok(p) = slot.period.parse::<Period>() else {
            continue;
        };
        if p < from || p > to {
            continue;
        }
        keys.insert(f.fingerprint.clone());
        out.push(InputDrop {
            form: slot.form.clone(),
            org: slot.org.clone(),
            period: slot.period.clone(),
            sha256: sha.to_string(),
            path: f.path.clone(),
            ledger_seq: f.seq,
            rows: f.rows,
        });
    }
    if keys.len() > 1 {
        return Err(Error::Usage(format!(
            "the drops from {from} to {to} were made with {} different keys ({}): persons \
             cannot be linked across keys. Report the months of each key epoch separately",
            keys.len(),
            keys.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    out.sort_by(|a, b| (&a.form, &a.period, &a.org).cmp(&(&b.form, &b.period, &b.org)));
    Ok((out, keys.into_iter().next()))
}

/// What an attribute of a person can be.
#[derive(Debug, Clone)]
pub enum Kind {
    /// One of these codes (stored as 1 + index; 0 unknown).
    Codes(Vec<&'static str>),
    /// yes/no (stored as 1 no, 2 yes; 0 unknown).
    Bool,
}

/// One attribute column carried from records to persons.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Column name (as in the drop).
    pub name: String,
    /// Its values.
    pub kind: Kind,
    /// How a person's value is resolved.
    pub rule: Rule,
}

/// The attributes of a form's persons: the age band, then the drop's kept
/// columns in schema order.
pub fn attributes(form: Form) -> Vec<Attr> {
    let mut out = vec![Attr {
        name: "age_band".into(),
        kind: Kind::Codes(AGE_BANDS.to_vec()),
        rule: Rule::MostFrequent,
    }];
    for c in form.schema().kept_columns() {
        let kind = match c.role {
            Role::YesNo => Kind::Bool,
            Role::Nationality => Kind::Codes(countries().iter().map(|c| c.alpha3).collect()),
            _ => Kind::Codes(
                code_list(c.codes.as_deref().expect("coded columns name a list"))
                    .codes
                    .clone(),
            ),
        };
        let rule = match (c.name.as_str(), &kind) {
            ("outcome", Kind::Codes(codes)) => Rule::AnyThenLatest(
                1 + codes
                    .iter()
                    .position(|c| *c == "identified")
                    .expect("the outcome list has identified") as u8,
            ),
            _ => Rule::MostFrequent,
        };
        out.push(Attr {
            name: c.name.clone(),
            kind,
            rule,
        });
    }
    out
}

/// A form's records as one DataFrame: the union of its drops, each with
/// its org and the ledger order of its drop; `None` when it has no drops.
pub async fn records_frame(
    ctx: &SessionContext,
    store: &Store,
    drops: &[InputDrop],
    form: Form,
) -> Result<Option<DataFrame>> {
    let mut frame: Option<DataFrame> = None;
    for d in drops.iter().filter(|d| d.form == form.code()) {
        let path = resolve(store.root(), &d.path);
        let path = path.to_str().ok_or_else(|| {
            Error::Usage(format!("the store's path {} is not UTF-8", path.display()))
        })?;
        let df = ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await
            .map_err(df_err)?;
        let mut cols: Vec<_> = df
            .schema()
            .fields()
            .iter()
            .map(|f| col(format!("\"{}\"", f.name())))
            .collect();
        cols.push(lit(d.org.clone()).alias("org"));
        cols.push(lit(d.ledger_seq as i64).alias("drop_seq"));
        let df = df.select(cols).map_err(df_err)?;
        frame = Some(match frame {
            None => df,
            Some(f) => f.union(df).map_err(df_err)?,
        });
    }
    Ok(frame)
}

/// A DataFusion error as ours.
pub fn df_err(e: datafusion::error::DataFusionError) -> Error {
    Error::Refused(format!("the query engine failed: {e}"))
}

/// Months since year 0 of a `YYYY-MM` string.
fn month_index(s: &str) -> Option<u32> {
    let p: Period = s.parse().ok()?;
    Some(p.year as u32 * 12 + p.month - 1)
}

/// `YYYY-MM` of a month index.
pub fn month_text(m: u32) -> String {
    format!("{:04}-{:02}", m / 12, m % 12 + 1)
}

/// Reads a form's records (streamed, batch by batch) into codes, and
/// counts the organisations seen.
pub async fn read_records(
    frame: DataFrame,
    attrs: &[Attr],
    orgs: &mut Vec<String>,
) -> Result<Records> {
    let mut records = Records::with_attrs(attrs.len());
    let mut org_index: HashMap<String, u16> = orgs
        .iter()
        .enumerate()
        .map(|(i, o)| (o.clone(), i as u16))
        .collect();
    let lookups: Vec<Option<HashMap<&'static str, u8>>> = attrs
        .iter()
        .map(|a| match &a.kind {
            Kind::Codes(codes) => Some(
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (*c, i as u8 + 1))
                    .collect(),
            ),
            Kind::Bool => None,
        })
        .collect();
    let mut stream = frame.execute_stream().await.map_err(df_err)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err)?;
        let n = batch.num_rows();
        let key = |name: &str| -> Result<Vec<u128>> {
            let a = column::<FixedSizeBinaryArray>(&batch, name)?;
            Ok((0..n)
                .map(|i| if a.is_valid(i) { prefix(a.value(i)) } else { 0 })
                .collect())
        };
        records.key_passport.extend(key("key_passport")?);
        records.key_name_dob.extend(key("key_name_dob")?);
        records.record_key.extend(key("record_key")?);
        let months = column::<StringArray>(&batch, "event_month")?;
        for i in 0..n {
            let m = month_index(months.value(i)).ok_or_else(|| {
                Error::Refused("a drop holds a malformed event_month".to_string())
            })?;
            records.month.push(m);
        }
        let seqs = column::<Int64Array>(&batch, "drop_seq")?;
        records
            .drop_seq
            .extend(seqs.values().iter().map(|&s| s as u32));
        let org = column::<StringArray>(&batch, "org")?;
        for i in 0..n {
            let o = org.value(i);
            let idx = match org_index.get(o) {
                Some(&x) => x,
                None => {
                    let x = orgs.len() as u16;
                    orgs.push(o.to_string());
                    org_index.insert(o.to_string(), x);
                    x
                }
            };
            records.org.push(idx);
        }
        for (a, (attr, lookup)) in attrs.iter().zip(&lookups).enumerate() {
            let out = &mut records.attrs[a];
            match lookup {
                Some(map) => {
                    let v = column::<StringArray>(&batch, &attr.name)?;
                    for i in 0..n {
                        out.push(if v.is_valid(i) {
                            *map.get(v.value(i)).ok_or_else(|| {
                                Error::Refused(format!(
                                    "a drop holds a value of {} that its form does not allow",
                                    attr.name
                                ))
                            })?
                        } else {
                            0
                        });
                    }
                }
                None => {
                    let v = column::<BooleanArray>(&batch, &attr.name)?;
                    out.extend((0..n).map(|i| {
                        if v.is_valid(i) {
                            1 + v.value(i) as u8
                        } else {
                            0
                        }
                    }));
                }
            }
        }
    }
    Ok(records)
}

fn prefix(k: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&k[..16]);
    // 0 means "no key"; a key whose first 128 bits are zero is as likely as
    // guessing the task-force key, but keep it a key.
    u128::from_be_bytes(b).max(1)
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Refused(format!("the drops' column {name} has an unexpected type")))
}

/// The persons table of a form: one row per person.
pub fn persons_batches(
    persons: &Persons,
    attrs: &[Attr],
    chunk: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut fields = vec![
        Field::new("person_id", DataType::Int64, false),
        Field::new("records", DataType::Int64, false),
        Field::new("organisations", DataType::Int64, false),
        Field::new("first_month", DataType::Utf8, false),
        Field::new("last_month", DataType::Utf8, false),
        Field::new("anonymous", DataType::Boolean, false),
    ];
    let dict = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8));
    for a in attrs {
        fields.push(Field::new(
            &a.name,
            match a.kind {
                Kind::Bool => DataType::Boolean,
                Kind::Codes(_) => dict.clone(),
            },
            true,
        ));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let n = persons.len();
    let mut batches = Vec::new();
    let mut start = 0;
    while start < n || (n == 0 && batches.is_empty()) {
        let end = (start + chunk).min(n);
        let r = start..end;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                r.clone().map(|i| i as i64 + 1),
            )),
            Arc::new(Int64Array::from_iter_values(
                persons.records[r.clone()].iter().map(|&x| x as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                persons.organisations[r.clone()].iter().map(|&x| x as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                persons.first_month[r.clone()]
                    .iter()
                    .map(|&m| month_text(m)),
            )),
            Arc::new(StringArray::from_iter_values(
                persons.last_month[r.clone()].iter().map(|&m| month_text(m)),
            )),
            Arc::new(BooleanArray::from(persons.anonymous[r.clone()].to_vec())),
        ];
        for (a, attr) in attrs.iter().enumerate() {
            let codes = &persons.attrs[a][r.clone()];
            cols.push(match &attr.kind {
                Kind::Bool => Arc::new(BooleanArray::from_iter(
                    codes.iter().map(|&c| (c != 0).then_some(c == 2)),
                )),
                Kind::Codes(values) => {
                    let keys =
                        UInt8Array::from_iter(codes.iter().map(|&c| (c != 0).then(|| c - 1)));
                    let values = Arc::new(StringArray::from_iter_values(values.iter()));
                    Arc::new(
                        DictionaryArray::<UInt8Type>::try_new(keys, values)
                            .map_err(|e| Error::Refused(e.to_string()))?,
                    )
                }
            });
        }
        batches.push(
            RecordBatch::try_new(schema.clone(), cols)
                .map_err(|e| Error::Refused(e.to_string()))?,
        );
        if n == 0 {
            break;
        }
        start = end;
    }
    Ok((schema, batches))
}

/// What linking found for one form.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkStats {
    /// Records read.
    pub records: u64,
    /// Persons they form.
    pub persons: u64,
    /// Persons with no match key (each counted once).
    pub anonymous: u64,
    /// Persons seen by more than one organisation.
    pub multi_org: u64,
    /// Organisations with records.
    pub organisations: u64,
    /// Records per organisation.
    pub records_by_org: BTreeMap<String, u64>,
}

/// Reads, links and registers one form: `FORM_records` (the drops' rows,
/// with `org` and `drop_seq`) and `FORM_persons` (one row per person).
pub async fn register_form(
    ctx: &SessionContext,
    store: &Store,
    drops: &[InputDrop],
    form: Form,
) -> Result<LinkStats> {
    let attrs = attributes(form);
    let frame = records_frame(ctx, store, drops, form).await?;
    let mut orgs = Vec::new();
    let records = match &frame {
        Some(f) => read_records(f.clone(), &attrs, &mut orgs).await?,
        None => Records::with_attrs(attrs.len()),
    };
    let rules: Vec<Rule> = attrs.iter().map(|a| a.rule).collect();
    let persons = link(&records, &rules);
    let mut by_org = BTreeMap::new();
    for &o in &records.org {
        *by_org.entry(orgs[o as usize].clone()).or_insert(0u64) += 1;
    }
    let stats = LinkStats {
        records: records.len() as u64,
        persons: persons.len() as u64,
        anonymous: persons.anonymous.iter().filter(|&&a| a).count() as u64,
        multi_org: persons.organisations.iter().filter(|&&o| o > 1).count() as u64,
        organisations: by_org.len() as u64,
        records_by_org: by_org,
    };
    drop(records);
    let partitions = ctx.copied_config().target_partitions().max(1);
    let chunk = (persons.len() / partitions).clamp(8192, 1 << 20);
    let (schema, batches) = persons_batches(&persons, &attrs, chunk)?;
    drop(persons);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % partitions].push(b);
    }
    let table = MemTable::try_new(schema, parts).map_err(df_err)?;
    let code = form.code();
    ctx.register_table(format!("{code}_persons"), Arc::new(table))
        .map_err(df_err)?;
    let records_view = match frame {
        Some(f) => f.into_view(),
        None => {
            // No drops of this form in the window: an empty table of the
            // same shape, so that queries over it still run.
            let mut fields: Vec<Field> = crate::drop::arrow_schema(form)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("org", DataType::Utf8, false));
            fields.push(Field::new("drop_seq", DataType::Int64, false));
            Arc::new(
                MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]]).map_err(df_err)?,
            )
        }
    };
    ctx.register_table(format!("{code}_records"), records_view)
        .map_err(df_err)?;
    Ok(stats)
}
