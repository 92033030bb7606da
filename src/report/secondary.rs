//! Secondary suppression over all tables of a report at once.
//!
//! Cells of different tables that count the same persons (the same
//! population and conditions, see [`super::tables`]) are one cell here, so
//! margins that tables share are seen. Every table line (a margin and the
//! cells it adds up) is a relation. After primary suppression the
//! suppressor repeats, until nothing fails:
//!
//! 1. find what fails: a suppressed cell that is alone among the suppressed
//!    cells of a line (it is that line's margin minus the rest), or whose
//!    whole-number range, from everything published, does not reach
//!    `min_count` or is narrower than `protection`; a line whose suppressed
//!    cells add up to a number a reader can work out that is from 1 to
//!    `min_count - 1`; a cell published now whose value differs by 1 to
//!    `min_count - 1` from the same cell in an earlier release over a
//!    window that contains this one or is contained in it;
//! 2. for each failure, in the order of the cells' identities, suppress
//!    one more cell of the line concerned: the one that leaves the fewest
//!    lines with a lone suppressed cell, then the smallest count, then
//!    inner cells before margins, then by identity. Zeros are never chosen
//!    while zeros are published (a reader knows every suppressed count is
//!    then at least 1).
//!
//! Choices depend on counts and identities (labels), never on the order
//! of rows or categories, so reordering them gives the same pattern.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::tables::{Flag, TOTAL, Table};
use crate::error::{Error, Result};
use crate::interval::{Op, System};

/// A cell's identity across tables: population and conditions.
pub type Key = (String, BTreeMap<String, String>);

/// The identity of a table's cell.
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

/// A cell published in an earlier release, for the difference rule.
#[derive(Debug, Clone)]
pub struct Earlier {
    /// The release it was published in (for messages).
    pub release: String,
    /// The cell's identity.
    pub key: Key,
    /// The value published.
    pub value: u64,
}

/// What the suppressor protects against.
#[derive(Debug, Clone)]
pub struct Params {
    /// Smallest count published, other than zero.
    pub min_count: u64,
    /// Width a suppressed cell's range must have.
    pub protection: u64,
    /// Whether zeros are published.
    pub zeros_published: bool,
    /// Cells published in earlier releases over windows nested with this
    /// one.
    pub earlier: Vec<Earlier>,
}

struct Cell {
    key: Key,
    /// The key as text, for ordering.
    name: String,
    count: u64,
    margin: bool,
    suppressed: bool,
    lines: Vec<usize>,
}

struct Line {
    name: String,
    /// Margin first, then the cells it adds up.
    margin: usize,
    parts: Vec<usize>,
}

impl Line {
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.margin).chain(self.parts.iter().copied())
    }
}

/// The cells and lines of all tables.
pub struct Grid {
    cells: Vec<Cell>,
    lines: Vec<Line>,
    /// For each table, for each row, its cell.
    rows: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// A suppressed cell a reader can narrow down too far.
    Cell(usize),
    /// A line whose suppressed cells add up to a small known number.
    Line(usize),
    /// A published cell too close to an earlier release's.
    Difference(usize),
}

impl Grid {
    /// The cells and lines of completed tables, with their primary flags.
    pub fn new(tables: &[Table]) -> Result<Grid> {
        let mut index: HashMap<Key, usize> = HashMap::new();
        let mut cells: Vec<Cell> = Vec::new();
        let mut rows = Vec::with_capacity(tables.len());
        for t in tables {
            let s = &t.spec;
            let mut ids = Vec::with_capacity(t.rows.len());
            for r in &t.rows {
                let key = cell_key(&s.population, &s.where_, &s.dimensions, &r.labels);
                let id = match index.get(&key) {
                    Some(&id) => {
                        if cells[id].count != r.count {
                            return Err(Error::Usage(format!(
                                "query {}: its cell {} counts the same persons as a cell of \
                                 another table (same population and conditions) but gives \
                                 another number; check its '-- population:' and '-- where:'",
                                s.source,
                                r.labels.join("/")
                            )));
                        }
                        id
                    }
                    None => {
                        let name = format!("{key:?}");
                        cells.push(Cell {
                            key: key.clone(),
                            name,
                            count: r.count,
                            margin: false,
                            suppressed: false,
                            lines: Vec::new(),
                        });
                        index.insert(key, cells.len() - 1);
                        cells.len() - 1
                    }
                };
                cells[id].suppressed |= r.flag != Flag::None;
                ids.push(id);
            }
            rows.push(ids);
        }
        let mut lines: Vec<Line> = Vec::new();
        let mut seen: BTreeSet<(usize, Vec<usize>)> = BTreeSet::new();
        for (t, ids) in tables.iter().zip(&rows) {
            let position: HashMap<&[String], usize> = t
                .rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.labels.as_slice(), i))
                .collect();
            for d in 0..t.spec.dimensions.len() {
                for (i, r) in t.rows.iter().enumerate() {
                    if r.labels[d] != TOTAL {
                        continue;
                    }
                    let mut parts: Vec<usize> = t
                        .rows
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| {
                            p.labels[d] != TOTAL
                                && p.labels
                                    .iter()
                                    .zip(&r.labels)
                                    .enumerate()
                                    .all(|(k, (a, b))| k == d || a == b)
                        })
                        .map(|(j, _)| ids[j])
                        .collect();
                    if parts.is_empty() || !position.contains_key(r.labels.as_slice()) {
                        continue;
                    }
                    parts.sort_unstable();
                    // Two tables can state one relation (a shared margin
                    // split the same way); keep it once.
                    if !seen.insert((ids[i], parts.clone())) {
                        continue;
                    }
                    let mut shown = r.labels.clone();
                    shown[d] = "*".to_string();
                    let l = lines.len();
                    cells[ids[i]].margin = true;
                    for &c in std::iter::once(&ids[i]).chain(&parts) {
                        cells[c].lines.push(l);
                    }
                    lines.push(Line {
                        name: format!("{}/{}", t.spec.name, shown.join("/")),
                        margin: ids[i],
                        parts,
                    });
                }
            }
        }
        Ok(Grid { cells, lines, rows })
    }

    /// Chooses further cells to suppress until nothing fails; returns how
    /// many were added.
    pub fn suppress(&mut self, p: &Params) -> Result<usize> {
        let earlier: HashMap<&Key, Vec<&Earlier>> =
            p.earlier.iter().fold(HashMap::new(), |mut m, e| {
                m.entry(&e.key).or_default().push(e);
                m
            });
        let mut added = 0;
        loop {
            let failures = self.failures(p, &earlier);
            if failures.is_empty() {
                return Ok(added);
            }
            let mut touched: BTreeSet<usize> = BTreeSet::new();
            let mut progress = false;
            for f in failures {
                let pick = match f {
                    Failure::Difference(c) => Some(c),
                    Failure::Line(l) => {
                        if touched.contains(&l) {
                            continue;
                        }
                        self.complement(&[l], p)
                    }
                    Failure::Cell(c) => {
                        if self.cells[c].lines.iter().any(|l| touched.contains(l)) {
                            continue;
                        }
                        // The lines where it is most exposed first.
                        let mut ls = self.cells[c].lines.clone();
                        ls.sort_by_cached_key(|&l| {
                            (self.suppressed_in(l), self.lines[l].name.clone())
                        });
                        self.complement(&ls, p)
                    }
                };
                let Some(pick) = pick else {
                    continue;
                };
                if self.cells[pick].suppressed {
                    continue;
                }
                self.cells[pick].suppressed = true;
                touched.extend(self.cells[pick].lines.iter().copied());
                added += 1;
                progress = true;
            }
            if !progress {
                return Err(Error::Refused(
                    "disclosure control cannot protect every small count of these tables \
                     (every cell that could hide it is already suppressed); raise min_count \
                     or remove a table"
                        .to_string(),
                ));
            }
        }
    }

    fn suppressed_in(&self, l: usize) -> usize {
        self.lines[l]
            .members()
            .filter(|&c| self.cells[c].suppressed)
            .count()
    }

    /// The best published cell of the first of `lines` that has one.
    fn complement(&self, lines: &[usize], p: &Params) -> Option<usize> {
        for &l in lines {
            let best = self.lines[l]
                .members()
                .filter(|&c| {
                    let cell = &self.cells[c];
                    !cell.suppressed && (cell.count > 0 || !p.zeros_published)
                })
                .min_by_key(|&c| {
                    let cell = &self.cells[c];
                    // Lines where suppressing it would leave it alone.
                    let lone = cell
                        .lines
                        .iter()
                        .filter(|&&m| m != l && self.suppressed_in(m) == 0)
                        .count();
                    (lone, cell.count, cell.margin, cell.name.clone())
                });
            if best.is_some() {
                return best;
            }
        }
        None
    }

    fn failures(&self, p: &Params, earlier: &HashMap<&Key, Vec<&Earlier>>) -> Vec<Failure> {
        let mut out = Vec::new();
        for (c, cell) in self.cells.iter().enumerate() {
            if cell.suppressed {
                continue;
            }
            let close = earlier.get(&cell.key).is_some_and(|es| {
                es.iter().any(|e| {
                    let d = e.value.abs_diff(cell.count);
                    d > 0 && d < p.min_count
                })
            });
            if close {
                out.push(Failure::Difference(c));
            }
        }
        // The reader's system: one variable per suppressed cell.
        let mut sys = System::new();
        let lower = if p.zeros_published { 1 } else { 0 };
        let mut var = vec![usize::MAX; self.cells.len()];
        for (c, cell) in self.cells.iter().enumerate() {
            if cell.suppressed {
                var[c] = sys.add_var(lower, None);
            }
        }
        for line in &self.lines {
            let mut terms = Vec::new();
            let mut rhs = 0.0;
            for (c, sign) in
                std::iter::once((line.margin, -1.0)).chain(line.parts.iter().map(|&c| (c, 1.0)))
            {
                if self.cells[c].suppressed {
                    terms.push((var[c], sign));
                } else {
                    rhs -= sign * self.cells[c].count as f64;
                }
            }
            sys.relate(&terms, Op::Eq, rhs);
        }
        for (c, cell) in self.cells.iter().enumerate() {
            if !cell.suppressed {
                continue;
            }
            let alone = cell.lines.iter().any(|&l| self.suppressed_in(l) == 1);
            let fails = alone
                || match sys.range(&[var[c]]) {
                    None => true,
                    Some(r) => match r.high {
                        None => false,
                        Some(h) => {
                            !r.exact
                                || (h as u64) < p.min_count
                                || ((h - r.low) as u64) < p.protection
                        }
                    },
                };
            if fails {
                out.push(Failure::Cell(c));
            }
        }
        for (l, line) in self.lines.iter().enumerate() {
            let vs: Vec<usize> = line
                .parts
                .iter()
                .filter(|&&c| self.cells[c].suppressed)
                .map(|&c| var[c])
                .collect();
            if vs.len() < 2 {
                continue;
            }
            if let Some(r) = sys.range(&vs)
                && r.high == Some(r.low)
                && r.low >= 1
                && (r.low as u64) < p.min_count
            {
                out.push(Failure::Line(l));
            }
        }
        // In the order of identities, so row order plays no part.
        out.sort_by_cached_key(|f| match f {
            Failure::Difference(c) => (0, self.cells[*c].name.clone()),
            Failure::Cell(c) => (1, self.cells[*c].name.clone()),
            Failure::Line(l) => (2, self.lines[*l].name.clone()),
        });
        out
    }

    /// Marks the tables' rows: primary cells stay primary, newly suppressed
    /// cells become secondary.
    pub fn apply(&self, tables: &mut [Table]) {
        for (t, ids) in tables.iter_mut().zip(&self.rows) {
            for (r, &c) in t.rows.iter_mut().zip(ids) {
                if self.cells[c].suppressed && r.flag == Flag::None {
                    r.flag = Flag::Secondary;
                }
            }
        }
    }
}

/// Secondary suppression of completed tables whose primary cells are
/// flagged; returns the number of cells added.
pub fn secondary(tables: &mut [Table], p: &Params) -> Result<usize> {
    let mut grid = Grid::new(tables)?;
    let added = grid.suppress(p)?;
    grid.apply(tables);
    Ok(added)
}
