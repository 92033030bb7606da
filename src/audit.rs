//! The attacker's audit of a published report, written apart from the
//! suppressor (it never calls it): it reads only what was published, the
//! tables and their structure in `manifest.json`, and asks, for every
//! suppressed cell, what a reader who knows the method can still believe.
//!
//! The reader knows every published count, that each table's margins are
//! sums of its cells, which cells of different tables count the same
//! persons (their population and conditions), that counts are whole
//! numbers, and, when zeros are published, that a suppressed count is at
//! least 1. For each suppressed cell the audit solves two linear programs
//! (smallest and largest value) with `microlp`; it does the same
//! for the sum of the suppressed cells of every table line, the sums a
//! reader gets by subtracting the published cells from a published margin.
//! It solves the linear relaxation and rounds inwards: `microlp`'s
//! branch-and-bound gave bounds that changed with the order of the
//! variables, the relaxation's optimum does not.
//!
//! A suppressed cell passes when its range reaches at least `min_count`
//! and is at least `protection` wide; a line's sum of suppressed cells
//! fails when it is fixed and between 1 and `min_count - 1`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use microlp::{ComparisonOp, OptimizationDirection, Problem};
use serde::Serialize;

use crate::error::{Error, Result};

/// The label of a margin.
const TOTAL: &str = "Total";

/// A published table: structure and cells.
#[derive(Debug, Clone)]
pub struct Published {
    /// Table name.
    pub name: String,
    /// Who the grand total counts.
    pub population: String,
    /// Conditions every cell has.
    pub where_: Vec<(String, String)>,
    /// Dimension names.
    pub dimensions: Vec<String>,
    /// Cells: labels and the published count (`None`: suppressed).
    pub rows: Vec<(Vec<String>, Option<u64>)>,
}

/// What a reader is told about the method.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Params {
    /// Smallest count published, other than zero.
    pub min_count: u64,
    /// Width a suppressed cell's range must have.
    pub protection: u64,
    /// Whether zeros are published (then a suppressed count is at least 1).
    pub zeros_published: bool,
}

/// The range a reader can believe for one suppressed cell or sum.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Table name.
    pub table: String,
    /// The cell's labels; for a line's sum, the line with `*` where the
    /// summed dimension runs.
    pub labels: Vec<String>,
    /// How many suppressed cells (1 for a cell).
    pub cells: usize,
    /// Smallest value a reader can believe.
    pub low: u64,
    /// Largest (`None`: unbounded).
    pub high: Option<u64>,
    /// Why it fails; `None` when it passes.
    pub failure: Option<String>,
}

/// The audit's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// One per distinct suppressed cell.
    pub cells: Vec<Finding>,
    /// One per table line with two or more suppressed cells.
    pub sums: Vec<Finding>,
    /// A count suppressed in one table but published in another (the same
    /// persons): disclosed outright.
    pub disclosed: Vec<String>,
}

impl Audit {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.disclosed.is_empty()
            && self
                .cells
                .iter()
                .chain(&self.sums)
                .all(|f| f.failure.is_none())
    }
}

/// A cell's identity across tables: population and conditions.
type Key = (String, BTreeMap<String, String>);

fn key(t: &Published, labels: &[String]) -> Key {
    let mut cond: BTreeMap<String, String> = t.where_.iter().cloned().collect();
    for (d, l) in t.dimensions.iter().zip(labels) {
        if l != TOTAL {
            cond.insert(d.clone(), l.clone());
        }
    }
    (t.population.clone(), cond)
}

/// One linear relation: the cells (by variable or value) summing to a
/// margin, as `sum(terms) = margin`.
struct Line {
    table: String,
    labels: Vec<String>,
    margin: Term,
    parts: Vec<Term>,
}

#[derive(Clone, Copy)]
enum Term {
    Known(u64),
    Var(usize),
}

/// Audits published tables.
pub fn audit(tables: &[Published], p: &Params) -> Audit {
    let mut out = Audit::default();
    // Distinct cells: a published value, or a variable.
    let mut known: HashMap<Key, u64> = HashMap::new();
    for t in tables {
        for (labels, count) in &t.rows {
            if let Some(c) = count {
                known.insert(key(t, labels), *c);
            }
        }
    }
    let mut vars: HashMap<Key, usize> = HashMap::new();
    let mut var_home: Vec<(String, Vec<String>)> = Vec::new();
    for t in tables {
        for (labels, count) in &t.rows {
            if count.is_some() {
                continue;
            }
            let k = key(t, labels);
            if let Some(v) = known.get(&k) {
                out.disclosed.push(format!(
                    "{} {}: suppressed, but the same persons are published as {v} in another \
                     table",
                    t.name,
                    labels.join("/")
                ));
                continue;
            }
            vars.entry(k).or_insert_with(|| {
                var_home.push((t.name.clone(), labels.clone()));
                var_home.len() - 1
            });
        }
    }
    let term = |t: &Published, labels: &[String]| -> Term {
        let k = key(t, labels);
        match known.get(&k) {
            Some(v) => Term::Known(*v),
            None => Term::Var(vars[&k]),
        }
    };
    // Every line of every table: a margin and the cells it sums.
    let mut lines = Vec::new();
    for t in tables {
        let index: HashMap<&[String], usize> = t
            .rows
            .iter()
            .enumerate()
            .map(|(i, (l, _))| (l.as_slice(), i))
            .collect();
        for d in 0..t.dimensions.len() {
            for (labels, _) in t.rows.iter().filter(|(l, _)| l[d] == TOTAL) {
                let parts: Vec<Term> = t
                    .rows
                    .iter()
                    .filter(|(l, _)| {
                        l[d] != TOTAL
                            && l.iter()
                                .zip(labels)
                                .enumerate()
                                .all(|(i, (a, b))| i == d || a == b)
                    })
                    .map(|(l, _)| term(t, l))
                    .collect();
                if parts.is_empty() || !index.contains_key(labels.as_slice()) {
                    continue;
                }
                let mut shown = labels.clone();
                shown[d] = "*".to_string();
                lines.push(Line {
                    table: t.name.clone(),
                    labels: shown,
                    margin: term(t, labels),
                    parts,
                });
            }
        }
    }
    let lower: i32 = if p.zeros_published { 1 } else { 0 };
    // Smallest and largest value of a sum of variables under every line.
    let range = |objective: &[usize]| -> (u64, Option<u64>) {
        let solve = |dir: OptimizationDirection| -> Option<f64> {
            let mut problem = Problem::new(dir);
            let xs: Vec<_> = (0..var_home.len())
                .map(|i| {
                    let c = if objective.contains(&i) { 1.0 } else { 0.0 };
                    problem.add_var(c, (lower as f64, f64::INFINITY))
                })
                .collect();
            for line in &lines {
                let mut expr: Vec<(microlp::Variable, f64)> = Vec::new();
                let mut rhs = 0.0;
                for t in &line.parts {
                    match t {
                        Term::Known(v) => rhs -= *v as f64,
                        Term::Var(i) => expr.push((xs[*i], 1.0)),
                    }
                }
                match line.margin {
                    Term::Known(v) => rhs += v as f64,
                    Term::Var(i) => expr.push((xs[i], -1.0)),
                }
                if !expr.is_empty() {
                    problem.add_constraint(expr.as_slice(), ComparisonOp::Eq, rhs);
                }
            }
            problem.solve().ok().map(|s| s.objective())
        };
        // The linear relaxation: its optimum is unique whatever the order of
        // the variables, and rounding inwards gives the whole numbers a
        // reader can believe (exact for the sums-of-cells structure of
        // one- and two-way tables, whose matrices are totally unimodular).
        let low = solve(OptimizationDirection::Minimize).unwrap_or(0.0);
        let high = solve(OptimizationDirection::Maximize).map(|h| (h + 1e-6).floor() as u64);
        ((low - 1e-6).ceil().max(0.0) as u64, high)
    };
    for (i, (table, labels)) in var_home.iter().enumerate() {
        let (low, high) = range(&[i]);
        let failure = match high {
            Some(h) if h < p.min_count => Some(format!(
                "a reader knows it is at most {h}, below {}",
                p.min_count
            )),
            Some(h) if h - low < p.protection => Some(format!(
                "a reader knows it is between {low} and {h}: narrower than {}",
                p.protection
            )),
            _ => None,
        };
        out.cells.push(Finding {
            table: table.clone(),
            labels: labels.clone(),
            cells: 1,
            low,
            high,
            failure,
        });
    }
    for line in &lines {
        let mut vs: Vec<usize> = line
            .parts
            .iter()
            .filter_map(|t| match t {
                Term::Var(i) => Some(*i),
                Term::Known(_) => None,
            })
            .collect();
        vs.sort_unstable();
        vs.dedup();
        if vs.len() < 2 {
            continue;
        }
        let (low, high) = range(&vs);
        let failure = match high {
            Some(h) if h == low && h >= 1 && h < p.min_count => Some(format!(
                "the {} suppressed cells of this line add up to {h}, which a reader can work out",
                vs.len()
            )),
            _ => None,
        };
        out.sums.push(Finding {
            table: line.table.clone(),
            labels: line.labels.clone(),
            cells: vs.len(),
            low,
            high,
            failure,
        });
    }
    out
}

/// Reads a report folder: the tables' structure and thresholds from
/// `manifest.json`, the cells from `tables/NAME.csv`.
pub fn read_report(dir: &Path) -> Result<(Vec<Published>, Params)> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| Error::io(format!("cannot read {}", manifest_path.display()), e))?;
    let m: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "{} is not a report manifest: {e}",
            manifest_path.display()
        ))
    })?;
    let bad = |what: &str| {
        Error::Usage(format!(
            "{}: {what}; was it written by an older safetally?",
            manifest_path.display()
        ))
    };
    let params = &m["parameters"];
    let min_count = params["min_count"]
        .as_u64()
        .ok_or_else(|| bad("no min_count"))?;
    let p = Params {
        min_count,
        protection: params["protection"].as_u64().unwrap_or(min_count),
        zeros_published: params["publish_zeros"].as_bool().unwrap_or(true),
    };
    let mut tables = Vec::new();
    for t in m["tables"].as_array().ok_or_else(|| bad("no tables"))? {
        let name = t["name"]
            .as_str()
            .ok_or_else(|| bad("a table has no name"))?;
        let dims: Vec<String> = t["dimensions"]
            .as_array()
            .ok_or_else(|| bad("a table has no dimensions"))?
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        let where_ = t["where"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let csv_path = dir.join("tables").join(format!("{name}.csv"));
        let mut rdr = csv::Reader::from_path(&csv_path)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", csv_path.display())))?;
        let mut rows = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| Error::Usage(format!("{}: {e}", csv_path.display())))?;
            let labels: Vec<String> = (0..dims.len()).map(|i| rec[i].to_string()).collect();
            let count = &rec[dims.len()];
            let count = if count.is_empty() {
                None
            } else {
                Some(count.parse().map_err(|_| {
                    Error::Usage(format!("{}: a count is not a number", csv_path.display()))
                })?)
            };
            rows.push((labels, count));
        }
        tables.push(Published {
            name: name.to_string(),
            population: t["population"].as_str().unwrap_or(name).to_string(),
            where_,
            dimensions: dims,
            rows,
        });
    }
    Ok((tables, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_row(cells: &[Option<u64>], total: Option<u64>) -> Published {
        let mut rows: Vec<(Vec<String>, Option<u64>)> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (vec![format!("c{i}")], *c))
            .collect();
        rows.push((vec![TOTAL.to_string()], total));
        Published {
            name: "t".into(),
            population: "p".into(),
            where_: vec![],
            dimensions: vec!["d".into()],
            rows,
        }
    }

    const P5: Params = Params {
        min_count: 5,
        protection: 5,
        zeros_published: true,
    };

    #[test]
    fn two_ones_behind_a_total_are_found_with_the_at_least_one_rule() {
        // 15 = 10 + 3 + x + y, x = y = 1: with every count at least 1, a
        // reader knows x = y = 1.
        let a = audit(&[one_row(&[Some(10), Some(3), None, None], Some(15))], &P5);
        assert!(!a.passed());
        assert!(a.cells.iter().all(|c| c.low == 1 && c.high == Some(1)));
    }

    #[test]
    fn a_derivable_small_sum_fails_even_when_each_cell_is_wide() {
        // A = 15 published, B = 5 and C = 3 suppressed, total 23,
        // threshold 11: B + C = 8 can be worked out.
        let p = Params {
            min_count: 11,
            protection: 1,
            zeros_published: true,
        };
        let a = audit(&[one_row(&[Some(15), None, None], Some(23))], &p);
        assert!(!a.passed());
        let sum = &a.sums[0];
        assert_eq!((sum.low, sum.high), (8, Some(8)));
        assert!(sum.failure.is_some());
    }

    #[test]
    fn three_singletons_in_one_row_are_each_known() {
        let a = audit(&[one_row(&[None, None, None, Some(40)], Some(43))], &P5);
        assert!(!a.passed());
        assert!(a.cells.iter().all(|c| c.high == Some(1)));
    }

    #[test]
    fn a_single_suppressed_cell_is_worked_out_from_its_margin() {
        let a = audit(&[one_row(&[Some(60), None], Some(63))], &P5);
        assert_eq!((a.cells[0].low, a.cells[0].high), (3, Some(3)));
        assert!(!a.passed());
    }

    #[test]
    fn wide_enough_ranges_pass() {
        let a = audit(&[one_row(&[Some(40), None, None], Some(52))], &P5);
        // x + y = 12, each from 1 to 11.
        assert_eq!((a.cells[0].low, a.cells[0].high), (1, Some(11)));
        assert!(a.passed(), "{a:?}");
    }

    #[test]
    fn two_tables_sharing_a_margin_are_read_together() {
        // By sex: 20 and a suppressed cell, total suppressed; by
        // nationality the same persons' total is published as 23.
        let mut by_sex = one_row(&[Some(20), None], None);
        by_sex.name = "by_sex".into();
        let mut by_nat = one_row(&[Some(10), Some(13)], Some(23));
        by_nat.name = "by_nat".into();
        by_nat.dimensions = vec!["nationality".into()];
        let a = audit(&[by_sex.clone()], &P5);
        assert!(a.passed(), "alone, the total is unknown");
        let a = audit(&[by_sex, by_nat], &P5);
        assert!(!a.passed(), "the shared total gives the cell away");
        assert!(a.disclosed.len() == 1 || a.cells.iter().any(|c| c.high == Some(3)));
    }
}
