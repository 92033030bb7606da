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

use rayon::prelude::*;
use serde::Serialize;

use crate::cubes::Layout;
use crate::error::{Error, Result};
use crate::interval::{Move, Op, System, Witnesses};
use crate::pseudonymise::Period;
use crate::store::release::nested_releases;
use crate::store::{State, Store};

/// Rounds of solutions that push unsettled cells up and down together.
const SPREAD_ROUNDS: usize = 8;

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
    /// The dimension whose Total percentages are of, if any.
    pub percent_of: Option<String>,
    /// Each row's published percentage (empty, or as long as `rows`).
    pub percents: Vec<Option<f64>>,
}

/// A cell published by an earlier release over a window nested with this
/// report's (containing it, or inside it).
#[derive(Debug, Clone)]
pub struct EarlierCell {
    /// Which release (for messages).
    pub release: String,
    /// The cell's identity.
    pub key: Key,
    /// The value published.
    pub value: u64,
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
    /// Published counts rounded to this base, if any.
    pub rounding: Option<u64>,
    /// Compute every range exactly (otherwise a range that whole-number
    /// solutions already show to be wide enough is not narrowed down).
    pub exact: bool,
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
    /// Whether `low` and `high` are the exact ends; when not, they are
    /// values whole-number solutions reach (the range is at least that).
    pub exact: bool,
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
    /// A cell whose value differs by a small count from an earlier release.
    pub differences: Vec<String>,
}

impl Audit {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.disclosed.is_empty()
            && self.differences.is_empty()
            && self
                .cells
                .iter()
                .chain(&self.sums)
                .all(|f| f.failure.is_none())
    }
}

impl Audit {
    /// Every failure, in words.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self.disclosed.clone();
        out.extend(self.differences.iter().cloned());
        for f in self.cells.iter().chain(&self.sums) {
            if let Some(why) = &f.failure {
                out.push(format!("{} [{}]: {why}", f.table, f.labels.join(", ")));
            }
        }
        out
    }
}

/// The cells published by the store's releases over windows nested with
/// `from..to`.
pub fn earlier_cells(
    state: &State,
    store: &Store,
    from: Period,
    to: Period,
) -> Result<Vec<EarlierCell>> {
    let mut out = Vec::new();
    for (rec, rel) in nested_releases(state, store, from, to)? {
        for t in rel.tables {
            let table = Published {
                name: t.name,
                population: t.population,
                where_: t.where_,
                dimensions: t.dimensions,
                rows: Vec::new(),
                percent_of: None,
                percents: Vec::new(),
            };
            for (labels, value) in t.cells {
                if let Some(v) = value {
                    out.push(EarlierCell {
                        release: rec.label(),
                        key: key(&table, &labels),
                        value: v,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The window a report covers, from its manifest.
pub fn report_window(dir: &Path) -> Result<(Period, Period)> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let m: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{} is not a report manifest: {e}", path.display())))?;
    let month = |k: &str| -> Result<Period> {
        m["window"][k]
            .as_str()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::Usage(format!("{}: no window {k}", path.display())))
    };
    Ok((month("from")?, month("to")?))
}

/// A cell's identity across tables and releases: population and
/// conditions.
pub type Key = (String, BTreeMap<String, String>);

/// The identity of a table's cell: its population, and as conditions the
/// table's `where` and its labels other than `Total`.
pub fn cell_key(
    population: &str,
    where_: &[(String, String)],
    dims: &[String],
    labels: &[String],
) -> Key {
    let mut cond: BTreeMap<String, String> = where_.iter().cloned().collect();
    for (d, l) in dims.iter().zip(labels) {
        if l != TOTAL {
            cond.insert(d.clone(), l.clone());
        }
    }
    (population.to_string(), cond)
}

/// The identity of a published table's cell.
pub fn key(t: &Published, labels: &[String]) -> Key {
    cell_key(&t.population, &t.where_, &t.dimensions, labels)
}

/// One published table line: a margin and the cells it adds up.
struct Line {
    table: String,
    labels: Vec<String>,
    margin: Key,
    parts: Vec<Key>,
}

/// What a reader knows of one distinct cell.
enum Value {
    /// Published exactly.
    Known(u64),
    /// A variable of the reader's system (suppressed, or published rounded).
    Var(usize),
}

/// Audits published tables, with the cells of earlier releases over
/// windows nested with this one.
pub fn audit(tables: &[Published], p: &Params, earlier: &[EarlierCell]) -> Audit {
    let mut out = Audit::default();
    let lower: i64 = if p.zeros_published { 1 } else { 0 };
    let mut sys = System::new();
    // Distinct cells: what is published of each, first as found.
    let mut published: HashMap<Key, u64> = HashMap::new();
    for t in tables {
        for (labels, count) in &t.rows {
            if let Some(c) = count {
                published.insert(key(t, labels), *c);
            }
        }
    }
    let mut values: HashMap<Key, Value> = HashMap::new();
    let mut var_home: Vec<(String, Vec<String>)> = Vec::new();
    let mut suppressed_vars: Vec<usize> = Vec::new();
    for t in tables {
        for (labels, count) in &t.rows {
            let k = key(t, labels);
            if values.contains_key(&k) {
                continue;
            }
            let v = match (count, published.get(&k)) {
                (None, Some(v)) => {
                    out.disclosed.push(format!(
                        "{} {}: suppressed, but the same persons are published as {v} in \
                         another table",
                        t.name,
                        labels.join("/")
                    ));
                    continue;
                }
                (Some(r), _) => match p.rounding {
                    None => Value::Known(*r),
                    Some(b) => {
                        // Rounded to the nearest multiple of b: the true
                        // count is within half a base of it, and a count
                        // from 1 to min_count - 1 would not be published.
                        let (lo, hi) = unround(*r, b, p.min_count);
                        Value::Var(sys.add_var(lo, Some(hi)))
                    }
                },
                (None, None) => {
                    let v = sys.add_var(lower, None);
                    var_home.push((t.name.clone(), labels.clone()));
                    suppressed_vars.push(v);
                    Value::Var(v)
                }
            };
            values.insert(k, v);
        }
    }
    // Every line of every table: a margin and the cells it adds up (the
    // rows that share every label but one).
    let mut lines = Vec::new();
    for t in tables {
        for d in 0..t.dimensions.len() {
            let others = |l: &[String]| -> Vec<String> {
                l.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != d)
                    .map(|(_, x)| x.clone())
                    .collect()
            };
            let mut parts_of: HashMap<Vec<String>, Vec<Key>> = HashMap::new();
            for (l, _) in t.rows.iter().filter(|(l, _)| l[d] != TOTAL) {
                parts_of.entry(others(l)).or_default().push(key(t, l));
            }
            for (labels, _) in t.rows.iter().filter(|(l, _)| l[d] == TOTAL) {
                let Some(parts) = parts_of.get(&others(labels)) else {
                    continue;
                };
                let mut shown = labels.clone();
                shown[d] = "*".to_string();
                lines.push(Line {
                    table: t.name.clone(),
                    labels: shown,
                    margin: key(t, labels),
                    parts: parts.clone(),
                });
            }
        }
    }
    let relate = |sys: &mut System, terms: &[(&Key, f64)], op: Op, mut rhs: f64| {
        let mut vars = Vec::new();
        for (k, c) in terms {
            match values.get(*k) {
                Some(Value::Known(v)) => rhs -= c * *v as f64,
                Some(Value::Var(i)) => vars.push((*i, *c)),
                None => {}
            }
        }
        sys.relate(&vars, op, rhs);
    };
    for line in &lines {
        let mut terms: Vec<(&Key, f64)> = vec![(&line.margin, -1.0)];
        terms.extend(line.parts.iter().map(|k| (k, 1.0)));
        relate(&mut sys, &terms, Op::Eq, 0.0);
    }
    // A published percentage p of a published or suppressed total: the
    // count is within half a tenth of a percent of p percent of it. (With
    // rounding, percentages are of the rounded counts, which are
    // published: they tell nothing more.)
    for t in tables.iter().filter(|_| p.rounding.is_none()) {
        let Some(d) = t
            .percent_of
            .as_ref()
            .and_then(|pd| t.dimensions.iter().position(|x| x == pd))
        else {
            continue;
        };
        for ((labels, _), pct) in t.rows.iter().zip(&t.percents) {
            let Some(pct) = pct else {
                continue;
            };
            let mut total = labels.clone();
            total[d] = TOTAL.to_string();
            let (n, den) = (key(t, labels), key(t, &total));
            relate(
                &mut sys,
                &[(&n, 100.0), (&den, -(pct - 0.05))],
                Op::Ge,
                -1e-9,
            );
            relate(
                &mut sys,
                &[(&n, 100.0), (&den, -(pct + 0.05))],
                Op::Le,
                1e-9,
            );
        }
    }
    let var_of = |k: &Key| match values.get(k) {
        Some(Value::Var(i)) => Some(*i),
        _ => None,
    };
    // Each table's suppressed cells by their labels, for cubes of them
    // (moves that keep every margin of the table; each step is checked
    // against this system before it is taken).
    let mut is_suppressed = vec![false; sys.vars()];
    for &v in &suppressed_vars {
        is_suppressed[v] = true;
    }
    let mut homes: Vec<Vec<(usize, Vec<String>)>> = vec![Vec::new(); sys.vars()];
    let layouts: Vec<Layout> = tables
        .iter()
        .enumerate()
        .map(|(t, table)| {
            let rows: Vec<(Vec<String>, usize)> = table
                .rows
                .iter()
                .filter_map(|(labels, _)| {
                    let v = var_of(&key(table, labels)).filter(|&v| is_suppressed[v])?;
                    homes[v].push((t, labels.clone()));
                    Some((labels.clone(), v))
                })
                .collect();
            Layout::new(table.dimensions.len(), TOTAL, rows)
        })
        .collect();
    let moves = |v: usize, most: usize| -> Vec<Move> {
        let mut out = Vec::new();
        for (t, labels) in &homes[v] {
            layouts[*t].cubes(
                labels,
                |_, _| true,
                |cube| {
                    out.push(cube.to_vec());
                    out.len() < most
                },
            );
        }
        out
    };
    // Each line's suppressed cells, for the sums a reader can form.
    let mut sums: Vec<(usize, Vec<usize>, Option<i64>)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut vs: Vec<usize> = line
            .parts
            .iter()
            .filter(|k| !published.contains_key(*k))
            .filter_map(var_of)
            .collect();
        vs.sort_unstable();
        vs.dedup();
        if vs.len() >= 2 {
            // Known when the margin and the other cells are published
            // exactly: the margin less the others.
            let exact_value = |k: &Key| match values.get(k) {
                Some(Value::Known(v)) => Some(*v as i64),
                _ => None,
            };
            let others: Option<i64> = line
                .parts
                .iter()
                .filter(|k| published.contains_key(*k))
                .map(exact_value)
                .sum();
            let known = exact_value(&line.margin).zip(others).map(|(m, o)| m - o);
            sums.push((i, vs, known));
        }
    }
    // Groups of variables that share no relation are independent: audited
    // in parallel, each with the whole-number solutions found so far.
    let components = sys.components();
    let mut home = vec![0usize; sys.vars()];
    for (g, vars) in components.iter().enumerate() {
        for &v in vars {
            home[v] = g;
        }
    }
    let mut cells_of: Vec<Vec<usize>> = vec![Vec::new(); components.len()];
    for (i, &v) in suppressed_vars.iter().enumerate() {
        cells_of[home[v]].push(i);
    }
    let mut sums_of: Vec<Vec<usize>> = vec![Vec::new(); components.len()];
    for (j, (_, vs, _)) in sums.iter().enumerate() {
        sums_of[home[vs[0]]].push(j);
    }
    // Per group: (cell number, finding) and (sum number, finding).
    type Numbered = Vec<(usize, Finding)>;
    let results: Vec<(Numbered, Numbered)> = (0..components.len())
        .into_par_iter()
        .filter(|&g| !cells_of[g].is_empty())
        .map(|g| {
            let mut group = Group::new(&sys, &components[g], p);
            if !p.exact {
                let vars: Vec<usize> = cells_of[g].iter().map(|&i| suppressed_vars[i]).collect();
                group.settle(&vars, &moves);
            }
            let cells = cells_of[g]
                .iter()
                .map(|&i| {
                    let (table, labels) = &var_home[i];
                    (i, group.cell(suppressed_vars[i], table, labels))
                })
                .collect();
            let sums = sums_of[g]
                .iter()
                .map(|&j| {
                    let (l, vs, known) = &sums[j];
                    (
                        j,
                        group.sum(vs, *known, &lines[*l].table, &lines[*l].labels),
                    )
                })
                .collect();
            (cells, sums)
        })
        .collect();
    let mut cells: Vec<(usize, Finding)> = Vec::new();
    let mut line_sums: Vec<(usize, Finding)> = Vec::new();
    for (c, s) in results {
        cells.extend(c);
        line_sums.extend(s);
    }
    cells.sort_by_key(|(i, _)| *i);
    line_sums.sort_by_key(|(i, _)| *i);
    out.cells = cells.into_iter().map(|(_, f)| f).collect();
    out.sums = line_sums.into_iter().map(|(_, f)| f).collect();
    // Differences with earlier releases: a cell published in both, whose
    // values differ by a small count, gives that count away.
    let mut by_key: HashMap<&Key, Vec<&EarlierCell>> = HashMap::new();
    for e in earlier {
        by_key.entry(&e.key).or_default().push(e);
    }
    for t in tables {
        for (labels, count) in &t.rows {
            let Some(c) = count else {
                continue;
            };
            let k = key(t, labels);
            for e in by_key.get(&k).into_iter().flatten() {
                let d = e.value.abs_diff(*c);
                if d > 0 && d < p.min_count {
                    out.differences.push(format!(
                        "{} {}: published as {c}, and as {} in the release {}: the difference, \
                         {d}, is a small count",
                        t.name,
                        labels.join("/"),
                        e.value,
                        e.release
                    ));
                }
            }
        }
    }
    out.differences.sort();
    out.differences.dedup();
    out
}

/// One group of related variables, with the whole-number solutions found
/// so far (any solution shows values a reader cannot rule out).
struct Group<'a> {
    sys: &'a System,
    p: &'a Params,
    known: Witnesses,
    infeasible: bool,
    /// The smallest-total solution, to re-optimise from.
    probe: Option<crate::interval::Probe>,
}

/// Why a group has no verdict but failure.
const CONTRADICTION: &str = "the published figures contradict each other";

impl<'a> Group<'a> {
    fn new(sys: &'a System, vars: &[usize], p: &'a Params) -> Self {
        let mut g = Group {
            sys,
            p,
            known: Witnesses::new(vars),
            infeasible: false,
            probe: None,
        };
        // A first solution: the smallest total.
        match sys.probe(vars) {
            Some(pr) => {
                match pr.start() {
                    Some(w) => g.known.absorb(&w),
                    None => {
                        if let Some(e) = sys.extreme(vars, false) {
                            g.known.absorb(&e.witness);
                        }
                    }
                }
                g.probe = Some(pr);
            }
            None => g.infeasible = true,
        }
        g
    }

    /// Solutions a reader cannot rule out, found cheaply, for the
    /// suppressed variables `vars`: a solution in the middle of what cubes
    /// of suppressed cells allow around the first, then climbs from it
    /// along cubes; while some are not settled, a program that pushes them
    /// together, and from its solution again the middle and climbs. What
    /// is still not settled gets programs of its own ([`Group::cell`]).
    fn settle(&mut self, vars: &[usize], moves: &impl Fn(usize, usize) -> Vec<Move>) {
        let (min, width) = (self.p.min_count as i64, self.p.protection as i64);
        let open = |g: &Self| {
            vars.iter()
                .filter(|&&v| !g.known.settles(v, min, width))
                .count()
        };
        self.centre(vars, moves);
        for _ in 0..SPREAD_ROUNDS {
            self.climb(vars, moves);
            let before = open(self);
            if before == 0 {
                return;
            }
            self.spread(vars, 1);
            self.centre(vars, moves);
            if open(self) == before {
                return;
            }
        }
    }

    /// A solution in the middle of what cubes of suppressed cells allow
    /// around the first.
    fn centre(&mut self, vars: &[usize], moves: &impl Fn(usize, usize) -> Vec<Move>) {
        if self.infeasible {
            return;
        }
        let (min, width) = (self.p.min_count as i64, self.p.protection as i64);
        let top = vars.iter().map(|&v| self.known.high(v)).max().unwrap_or(0);
        let cap = top.max(0) * 2 + min + width;
        let all: Vec<Move> = vars.iter().flat_map(|&v| moves(v, 24)).collect();
        for _ in 0..3 {
            self.known
                .centre(self.sys, cap, all.iter().map(Vec::as_slice));
        }
    }

    /// Solutions reached from the first by cubes of suppressed cells
    /// (`moves`), for the variables of `vars` not yet settled.
    fn climb(&mut self, vars: &[usize], moves: &impl Fn(usize, usize) -> Vec<Move>) {
        if self.infeasible {
            return;
        }
        let (min, width) = (self.p.min_count as i64, self.p.protection as i64);
        self.known
            .settle_by_moves(self.sys, vars, min, width, |w| moves(w, 48));
    }

    /// Solutions that settle the suppressed variables `vars` in bulk.
    fn spread(&mut self, vars: &[usize], rounds: usize) {
        if self.infeasible {
            return;
        }
        let (min, width) = (self.p.min_count as i64, self.p.protection as i64);
        let top = vars.iter().map(|&v| self.known.high(v)).max().unwrap_or(0);
        let cap = top.max(0) * 2 + min + width;
        self.known.spread(self.sys, vars, min, width, cap, rounds);
    }

    /// The range of one suppressed cell and its verdict.
    fn cell(&mut self, v: usize, table: &str, labels: &[String]) -> Finding {
        let p = self.p;
        let finding = |low: i64, high: Option<i64>, exact: bool, failure: Option<String>| Finding {
            table: table.to_string(),
            labels: labels.to_vec(),
            cells: 1,
            low: low.max(0) as u64,
            high: high.map(|h| h as u64),
            exact,
            failure,
        };
        let contradiction = || finding(0, None, true, Some(CONTRADICTION.into()));
        if self.infeasible {
            return contradiction();
        }
        let (min, width) = (p.min_count as i64, p.protection as i64);
        let known = &mut self.known;
        if !p.exact && known.settles(v, min, width) {
            return finding(known.low(v), Some(known.high(v)), false, None);
        }
        if !p.exact {
            // Can it reach what it needs above its lowest known value?
            let target = min.max(known.low(v) + width);
            let found = self
                .probe
                .as_ref()
                .and_then(|pr| pr.reach(v, target, true).0);
            if let Some(w) = found {
                known.absorb(&w);
                return finding(known.low(v), Some(known.high(v)), false, None);
            }
        }
        let Some(high) = self.sys.extreme(&[v], true) else {
            return contradiction();
        };
        known.absorb(&high.witness);
        let need_low = p.exact
            || high
                .value
                .is_some_and(|h| h >= min && h - known.low(v) < width);
        let low = if need_low {
            let Some(e) = self.sys.extreme(&[v], false) else {
                return contradiction();
            };
            known.absorb(&e.witness);
            Some(e)
        } else {
            None
        };
        let exact = high.exact && low.as_ref().is_some_and(|l| l.exact);
        let lo = low.as_ref().and_then(|l| l.value).unwrap_or(known.low(v));
        let failure = match high.value {
            None => None,
            Some(h) if h < min => Some(format!("a reader knows it is at most {h}, below {min}")),
            Some(h) if h - lo < width => Some(format!(
                "a reader knows it is between {lo} and {h}: narrower than {width}"
            )),
            Some(_) if !high.exact || low.as_ref().is_some_and(|l| !l.exact) => {
                Some("its range could not be proven within the search limit".to_string())
            }
            Some(_) => None,
        };
        finding(lo, high.value, exact, failure)
    }

    /// The range of a line's suppressed cells' sum and its verdict.
    /// `known`: the sum, when the line's margin and its other cells are
    /// published exactly (the margin less the others).
    fn sum(&mut self, vs: &[usize], known: Option<i64>, table: &str, labels: &[String]) -> Finding {
        let p = self.p;
        let mut f = Finding {
            table: table.to_string(),
            labels: labels.to_vec(),
            cells: vs.len(),
            low: 0,
            high: None,
            exact: true,
            failure: None,
        };
        let (lo, hi) = self
            .known
            .sums(vs)
            .into_iter()
            .fold((i64::MAX, i64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        if let Some(k) = known {
            (f.low, f.high) = (k.max(0) as u64, Some(k.max(0) as u64));
        } else if !p.exact && lo < hi {
            (f.low, f.high, f.exact) = (lo.max(0) as u64, Some(hi.max(0) as u64), false);
            return f;
        } else {
            let (Some(a), Some(b)) = (self.sys.extreme(vs, false), self.sys.extreme(vs, true))
            else {
                f.failure = Some(CONTRADICTION.into());
                return f;
            };
            f.low = a.value.unwrap_or(0).max(0) as u64;
            f.high = b.value.map(|h| h as u64);
            f.exact = a.exact && b.exact;
        }
        if f.high == Some(f.low) && f.low >= 1 && f.low < p.min_count {
            f.failure = Some(format!(
                "the {} suppressed cells of this line add up to {}, which a reader can work out",
                vs.len(),
                f.low
            ));
        }
        f
    }
}

/// The counts that round to `r` (nearest multiple of `base`, halves up)
/// and could have been published.
fn unround(r: u64, base: u64, min_count: u64) -> (i64, i64) {
    let (lo, hi) = (r.saturating_sub(base / 2), r + base.div_ceil(2) - 1);
    let possible = |v: &u64| *v == 0 || *v >= min_count;
    let lo = (lo..=hi).find(possible).unwrap_or(r);
    let hi = (lo..=hi).rev().find(possible).unwrap_or(r);
    (lo as i64, hi as i64)
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
        rounding: params["rounding_base"].as_u64().filter(|b| *b > 1),
        exact: false,
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
        let percent_of = t["percent"].as_str().map(str::to_string);
        let percent_col = rdr
            .headers()
            .map_err(|e| Error::Usage(format!("{}: {e}", csv_path.display())))?
            .iter()
            .position(|h| h == "percent");
        let mut rows = Vec::new();
        let mut percents = Vec::new();
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
            percents.push(match percent_col.map(|i| &rec[i]) {
                Some(p) if !p.is_empty() => Some(p.parse().map_err(|_| {
                    Error::Usage(format!(
                        "{}: a percentage is not a number",
                        csv_path.display()
                    ))
                })?),
                _ => None,
            });
        }
        tables.push(Published {
            name: name.to_string(),
            population: t["population"].as_str().unwrap_or(name).to_string(),
            where_,
            dimensions: dims,
            rows,
            percent_of,
            percents,
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
            percent_of: None,
            percents: vec![],
        }
    }

    const P5: Params = Params {
        min_count: 5,
        protection: 5,
        zeros_published: true,
        rounding: None,
        exact: true,
    };

    #[test]
    fn two_ones_behind_a_total_are_found_with_the_at_least_one_rule() {
        // 15 = 10 + 3 + x + y, x = y = 1: with every count at least 1, a
        // reader knows x = y = 1.
        let a = audit(
            &[one_row(&[Some(10), Some(3), None, None], Some(15))],
            &P5,
            &[],
        );
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
            rounding: None,
            exact: true,
        };
        let a = audit(&[one_row(&[Some(15), None, None], Some(23))], &p, &[]);
        assert!(!a.passed());
        let sum = &a.sums[0];
        assert_eq!((sum.low, sum.high), (8, Some(8)));
        assert!(sum.failure.is_some());
    }

    #[test]
    fn three_singletons_in_one_row_are_each_known() {
        let a = audit(
            &[one_row(&[None, None, None, Some(40)], Some(43))],
            &P5,
            &[],
        );
        assert!(!a.passed());
        assert!(a.cells.iter().all(|c| c.high == Some(1)));
    }

    #[test]
    fn a_single_suppressed_cell_is_worked_out_from_its_margin() {
        let a = audit(&[one_row(&[Some(60), None], Some(63))], &P5, &[]);
        assert_eq!((a.cells[0].low, a.cells[0].high), (3, Some(3)));
        assert!(!a.passed());
    }

    #[test]
    fn wide_enough_ranges_pass() {
        let a = audit(&[one_row(&[Some(40), None, None], Some(52))], &P5, &[]);
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
        let a = audit(&[by_sex.clone()], &P5, &[]);
        assert!(a.passed(), "alone, the total is unknown");
        let a = audit(&[by_sex, by_nat], &P5, &[]);
        assert!(!a.passed(), "the shared total gives the cell away");
        assert!(a.disclosed.len() == 1 || a.cells.iter().any(|c| c.high == Some(3)));
    }

    #[test]
    fn a_published_percentage_pins_a_suppressed_numerator() {
        // 85.5% of 207: the numerator is 177 (176.88 to 177.09).
        let mut t = one_row(&[None, None, Some(0)], Some(207));
        t.percent_of = Some("d".into());
        t.percents = vec![Some(85.5), None, None, None];
        let a = audit(&[t.clone()], &P5, &[]);
        assert_eq!((a.cells[0].low, a.cells[0].high), (177, Some(177)));
        assert!(!a.passed());
        t.percents = vec![None; 4];
        let a = audit(&[t], &P5, &[]);
        assert_eq!((a.cells[0].low, a.cells[0].high), (1, Some(206)));
    }

    #[test]
    fn rounded_counts_are_read_as_ranges() {
        // Base 5: a published 10 is 8 to 12, a published 15 total 13 to 17;
        // the suppressed cell is their difference: 1 to 9.
        let p = Params {
            rounding: Some(5),
            ..P5
        };
        let a = audit(&[one_row(&[None, Some(10)], Some(15))], &p, &[]);
        assert_eq!((a.cells[0].low, a.cells[0].high), (1, Some(9)));
        assert!(a.passed(), "{a:?}");
        // Exact counts would pin it at 5.
        let a = audit(&[one_row(&[None, Some(10)], Some(15))], &P5, &[]);
        assert_eq!((a.cells[0].low, a.cells[0].high), (5, Some(5)));
        assert_eq!(
            unround(0, 5, 5),
            (0, 0),
            "a published 0 is 0: 1 and 2 would be hidden"
        );
        assert_eq!(unround(5, 5, 5), (5, 7));
    }
}
