//! Figures as SQL files: parsing their header, running them, completing
//! each table with its zero cells and margins.
//!
//! A query file starts with `--` header lines:
//!
//! ```sql
//! -- title: Identified persons by sex
//! -- dimensions: sex
//! -- counts: distinct persons screened in the window and identified
//! -- percent: sex            (optional: percent of this dimension's Total)
//! -- order: 20               (optional: place in the report)
//! -- population: persons screened    (optional: who the grand total counts)
//! -- where: outcome = identified     (optional: the part of it this table covers)
//! SELECT sex, count(*) AS count FROM screening_persons WHERE ... GROUP BY sex
//! ```
//!
//! The query returns the dimension columns, in the order named, then
//! `count`: one row per cell, each person in at most one cell (so margins
//! are sums). Grouping by a persons view's own column (`GROUP BY sex`,
//! `GROUP BY first_month`) groups by its codes ([`super::grouping`]),
//! faster than grouping by an expression of it.
//!
//! `population` and `where` say which cells of different tables count the
//! same persons: a cell is its population with its `where` and its
//! non-`Total` labels as conditions, so the `identified` cell of a table of
//! persons screened by outcome is the grand total of a table of persons
//! screened `where: outcome = identified`. Disclosure control needs this to
//! see margins that tables share.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use super::input::df_err;
use crate::error::{Error, Result};
use crate::pseudonymise::normalise::AGE_BANDS;
use crate::schema::{Form, Role, code_list};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/queries.rs"));
}

/// The label of a margin.
pub const TOTAL: &str = "Total";
/// The label of an unknown value.
pub const UNKNOWN: &str = "unknown";

/// A parsed query file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuerySpec {
    /// The table's name: the file name without `.sql`.
    pub name: String,
    /// Title for readers.
    pub title: String,
    /// Dimension columns, in order.
    pub dimensions: Vec<String>,
    /// What is counted, for readers.
    pub counts: String,
    /// Percentages of this dimension's Total, if any.
    pub percent_of: Option<String>,
    /// Place in the report (then the name).
    pub order: i64,
    /// Who the grand total counts (tables of one population share cells).
    pub population: String,
    /// Conditions every cell of the table has, as (dimension, value).
    #[serde(rename = "where")]
    pub where_: Vec<(String, String)>,
    /// Where it came from: `built-in` or the file's path.
    pub source: String,
    /// SHA-256 of the file's text.
    pub sha256: String,
    /// The SQL.
    #[serde(skip)]
    pub sql: String,
}

impl QuerySpec {
    /// A spec for tables made in code (tests, benchmarks): no SQL.
    pub fn synthetic(
        name: &str,
        population: &str,
        where_: &[(&str, &str)],
        dimensions: &[&str],
    ) -> Self {
        QuerySpec {
            name: name.to_string(),
            title: name.to_string(),
            dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
            counts: String::new(),
            percent_of: None,
            order: 0,
            population: population.to_string(),
            where_: where_
                .iter()
                .map(|(d, v)| (d.to_string(), v.to_string()))
                .collect(),
            source: format!("synthetic {name}"),
            sha256: String::new(),
            sql: String::new(),
        }
    }
}

/// Parses one query file.
pub fn parse_query(file_name: &str, text: &str, source: &str) -> Result<QuerySpec> {
    let name = file_name.trim_end_matches(".sql").to_string();
    let bad = |what: String| Error::Usage(format!("query {source}: {what}"));
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(bad(
            "the file name must be lower-case letters, digits and _ (it names the table)"
                .to_string(),
        ));
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("--") else {
            if line.trim().is_empty() {
                continue;
            }
            break;
        };
        if let Some((k, v)) = rest.split_once(':') {
            fields.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let get = |k: &str| {
        fields
            .get(k)
            .cloned()
            .ok_or_else(|| bad(format!("the header has no '-- {k}:' line")))
    };
    let dimensions: Vec<String> = get("dimensions")?
        .split(',')
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    if dimensions.is_empty() {
        return Err(bad("'-- dimensions:' names no column".to_string()));
    }
    let percent_of = fields.get("percent").map(|p| p.trim().to_string());
    if let Some(p) = &percent_of
        && !dimensions.contains(p)
    {
        return Err(bad(format!(
            "'-- percent: {p}' is not one of the dimensions"
        )));
    }
    let order = match fields.get("order") {
        Some(o) => o
            .parse()
            .map_err(|_| bad(format!("'-- order: {o}' is not a number")))?,
        None => 1000,
    };
    let population = fields
        .get("population")
        .cloned()
        .unwrap_or_else(|| format!("table {name}"));
    let mut where_ = Vec::new();
    if let Some(w) = fields.get("where") {
        for part in w.split(',').filter(|p| !p.trim().is_empty()) {
            let (d, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'-- where: {w}' is not like 'column = value'")))?;
            let (d, v) = (d.trim().to_string(), v.trim().to_string());
            if dimensions.contains(&d) {
                return Err(bad(format!(
                    "'-- where:' fixes {d}, which is also a dimension"
                )));
            }
            where_.push((d, v));
        }
    }
    where_.sort();
    Ok(QuerySpec {
        population,
        where_,
        name,
        title: get("title")?,
        dimensions,
        counts: get("counts")?,
        percent_of,
        order,
        source: source.to_string(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        sql: text.to_string(),
    })
}

/// The built-in queries, and those of `extra` (a folder of `.sql` files;
/// one with a built-in's name replaces it), in report order.
pub fn load_queries(extra: Option<&Path>) -> Result<Vec<QuerySpec>> {
    let mut specs: Vec<QuerySpec> = builtin::BUILTIN
        .iter()
        .map(|(name, text)| parse_query(name, text, &format!("queries/{name}")))
        .collect::<Result<_>>()?;
    if let Some(dir) = extra {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| {
                Error::io(
                    format!("cannot read the queries folder {}", dir.display()),
                    e,
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Error::io(format!("cannot read {}", f.display()), e))?;
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let spec = parse_query(name, &text, &f.display().to_string())?;
            specs.retain(|s| s.name != spec.name);
            specs.push(spec);
        }
    }
    specs.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    Ok(specs)
}

/// Why a cell is not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Published.
    None,
    /// A small count.
    Primary,
    /// Suppressed so that a primary cell cannot be worked out.
    Secondary,
}

impl Flag {
    /// The word in `flag` columns (empty when published). Small counts
    /// and the cells that protect them read the same: telling them apart
    /// would tell a reader which cells are small.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::None => "",
            Flag::Primary | Flag::Secondary => "suppressed",
        }
    }
}

/// One cell of a table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// One label per dimension (`Total` for a margin).
    pub labels: Vec<String>,
    /// Distinct persons (or what the query counts).
    pub count: u64,
    /// Whether it is published.
    pub flag: Flag,
    /// Percentage of the `percent` dimension's Total, when shown.
    pub percent: Option<f64>,
}

impl Row {
    /// Whether this row is a margin in any dimension.
    pub fn is_margin(&self) -> bool {
        self.labels.iter().any(|l| l == TOTAL)
    }
}

/// A complete table: every combination of dimension values, margins
/// included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Table {
    /// The query it came from.
    pub spec: QuerySpec,
    /// Rows: each dimension's values in order, `Total` last.
    pub rows: Vec<Row>,
}

impl Table {
    /// Each row's labels and its count as published (`None`: withheld).
    pub fn shown(&self) -> Vec<(Vec<String>, Option<u64>)> {
        self.rows
            .iter()
            .map(|r| (r.labels.clone(), (r.flag == Flag::None).then_some(r.count)))
            .collect()
    }

    /// The row with these labels.
    pub fn get(&self, labels: &[&str]) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.labels
                .iter()
                .map(String::as_str)
                .eq(labels.iter().copied())
        })
    }
}

/// The values a dimension takes, before any observed extra: a code list
/// when the column is a coded column of a form, the age bands, every month
/// of the window for a month column.
fn domain(dim: &str, months: &[String]) -> Vec<String> {
    if dim == "age_band" {
        return AGE_BANDS.iter().map(|s| s.to_string()).collect();
    }
    if dim.ends_with("month") {
        return months.to_vec();
    }
    for form in Form::ALL {
        if let Some(c) = form.schema().columns.iter().find(|c| c.name == dim)
            && matches!(c.role, Role::Code | Role::Sex)
        {
            return code_list(c.codes.as_deref().expect("coded columns name a list"))
                .codes
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
    }
    Vec::new()
}

/// Runs a query and completes its table (zero cells, margins). Suppression
/// comes after, over all tables.
pub async fn run_query(ctx: &SessionContext, spec: &QuerySpec, months: &[String]) -> Result<Table> {
    let bad = |what: String| Error::Usage(format!("query {}: {what}", spec.source));
    // A query file is outside text: a panic while planning or running it
    // (a bug in the engine) is this query's error, not the end of the run.
    let run = async {
        ctx.sql(&spec.sql)
            .await
            .map_err(|e| bad(e.to_string()))?
            .collect()
            .await
            .map_err(df_err)
    };
    let batches = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run))
        .await
        .map_err(|_| {
            bad(
                "the query engine met an internal error running it: report it, with the \
                 query"
                    .to_string(),
            )
        })??;
    let mut base: HashMap<Vec<String>, u64> = HashMap::new();
    let mut seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); spec.dimensions.len()];
    for batch in &batches {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let want: Vec<&str> = spec
            .dimensions
            .iter()
            .map(String::as_str)
            .chain(["count"])
            .collect();
        if names != want {
            return Err(bad(format!(
                "returns the columns {} but its header promises {}",
                names.join(", "),
                want.join(", ")
            )));
        }
        let dims: Vec<StringArray> = (0..spec.dimensions.len())
            .map(|i| {
                let a = cast(batch.column(i), &DataType::Utf8).map_err(|e| bad(e.to_string()))?;
                Ok(a.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8")
                    .clone())
            })
            .collect::<Result<_>>()?;
        let counts = cast(batch.column(spec.dimensions.len()), &DataType::Int64)
            .map_err(|e| bad(format!("count is not a number ({e})")))?;
        let counts = counts
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64");
        for r in 0..batch.num_rows() {
            let labels: Vec<String> = dims
                .iter()
                .map(|d| {
                    if d.is_valid(r) {
                        d.value(r).to_string()
                    } else {
                        UNKNOWN.to_string()
                    }
                })
                .collect();
            if labels.iter().any(|l| l == TOTAL) {
                return Err(bad(format!(
                    "a dimension value is '{TOTAL}', the margins' label"
                )));
            }
            let c = if counts.is_valid(r) {
                counts.value(r)
            } else {
                0
            };
            if c < 0 {
                return Err(bad("a count is negative".to_string()));
            }
            for (s, l) in seen.iter_mut().zip(&labels) {
                s.insert(l.clone());
            }
            if base.insert(labels, c as u64).is_some() {
                return Err(bad(
                    "returns two rows for one cell: GROUP BY every dimension".to_string(),
                ));
            }
        }
    }
    // Each dimension's values: its domain, then any other value seen
    // (unknown last), then Total.
    let values: Vec<Vec<String>> = spec
        .dimensions
        .iter()
        .zip(&seen)
        .map(|(d, seen)| {
            let mut v = domain(d, months);
            let mut extra: Vec<String> = seen
                .iter()
                .filter(|s| !v.contains(s) && *s != UNKNOWN)
                .cloned()
                .collect();
            extra.sort();
            v.extend(extra);
            if seen.contains(UNKNOWN) {
                v.push(UNKNOWN.to_string());
            }
            v.push(TOTAL.to_string());
            v
        })
        .collect();
    Ok(complete(spec.clone(), &values, &base))
}

/// A table with every combination of `values` (each dimension's values,
/// `Total` last), the last dimension fastest: each cell the sum of the
/// `base` counts it covers (missing combinations count 0).
pub fn complete(
    spec: QuerySpec,
    values: &[Vec<String>],
    base: &HashMap<Vec<String>, u64>,
) -> Table {
    // Sum into every cell a base cell falls in: the cell itself and each
    // of its margins.
    let mut sums: HashMap<Vec<String>, u64> = HashMap::new();
    for (labels, &c) in base {
        for mask in 0..(1usize << labels.len()) {
            let key: Vec<String> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if mask & (1 << i) != 0 {
                        TOTAL.to_string()
                    } else {
                        l.clone()
                    }
                })
                .collect();
            *sums.entry(key).or_default() += c;
        }
    }
    let mut rows = Vec::new();
    let mut idx = vec![0usize; values.len()];
    loop {
        let labels: Vec<String> = idx.iter().zip(values).map(|(&i, v)| v[i].clone()).collect();
        let count = sums.get(&labels).copied().unwrap_or(0);
        rows.push(Row {
            labels,
            count,
            flag: Flag::None,
            percent: None,
        });
        // Next combination, the last dimension fastest.
        let mut d = values.len();
        loop {
            if d == 0 {
                return Table { spec, rows };
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < values[d].len() {
                break;
            }
            idx[d] = 0;
        }
    }
}
