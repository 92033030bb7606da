//! Secondary suppression over all tables of a report at once.
//!
//! Cells of different tables that count the same persons (the same
//! population and conditions, see [`super::tables`]) are one cell here, so
//! margins that tables share are seen. Every table line (a margin and the
//! cells it adds up) is a relation. After primary suppression:
//!
//! 1. A published cell whose value differs by 1 to `min_count - 1` from
//!    the same cell in an earlier release over a nested window (one
//!    containing this one, or inside it) is suppressed: the difference
//!    would count a small group.
//! 2. The hypercube method: each small suppressed cell, smallest first,
//!    gets the cheapest cube through it ([`crate::cubes`]: cells whose
//!    signed change keeps every margin) in which every cell that falls
//!    while it rises to `min_count` and by `protection` has that much room;
//!    fewest new cells, then smallest sum of counts, then identities. A
//!    cube of cells already suppressed costs nothing.
//! 3. While a line holds exactly one suppressed cell (which is then the
//!    margin minus the rest), one more cell of it is suppressed.
//! 4. The suppressed cells fall into groups joined by the lines they
//!    share. For each group (in parallel; a group already found sound is
//!    not checked again) the reader's system is solved: every suppressed
//!    cell's whole-number range must reach `min_count` and be at least
//!    `protection` wide, and no line's suppressed cells may add up to a
//!    number from 1 to `min_count - 1` that the reader can work out. The
//!    true table, the tables reached from it along cubes of suppressed
//!    cells, and each solution the solver returns are solutions a reader
//!    cannot rule out, so a cell they already show wide enough needs no
//!    program of its own.
//! 5. For each failure, in the order of the cells' identities, the
//!    cheapest cube through it is suppressed; where none fits, one more
//!    cell: in the failing cell's most exposed line (fewest suppressed
//!    cells), else in its suppressed neighbours' lines, else in any line
//!    with a suppressed cell; the candidate that leaves the fewest lines
//!    with a lone suppressed cell, then the smallest count, inner cells
//!    before margins, then by identity. Zeros are never chosen while zeros
//!    are published (a reader knows every suppressed count is then at
//!    least 1). Then back to 3, until nothing fails.
//!
//! Choices depend on counts and identities (labels), never on the order
//! of rows or categories, so reordering them gives the same pattern.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;

use super::tables::{Flag, TOTAL, Table};
use crate::cubes::Layout;
use crate::error::{Error, Result};
use crate::interval::{Move, Op, System, Witnesses};

/// Rounds of solutions that push unsettled cells up and down together.
const SPREAD_ROUNDS: usize = 8;

pub use crate::audit::{Key, cell_key};

/// A row's labels with the `d`-th left out: the same for every row of
/// one line of dimension `d`.
pub fn masked(labels: &[String], d: usize) -> Vec<&str> {
    labels
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != d)
        .map(|(_, l)| l.as_str())
        .collect()
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
    /// Each table's cells by their labels, for cubes.
    layouts: Vec<Layout>,
    /// For each cell, the tables it is in and its labels there.
    homes: Vec<Vec<(usize, Vec<String>)>>,
    /// For each line, how many of its cells are suppressed.
    in_line: Vec<usize>,
    /// Cells found protected. Suppressing more only widens what a reader
    /// can believe, so they stay protected.
    passed: Vec<bool>,
    /// For each line, how many suppressed inner cells it had when its sum
    /// was found not to be given away (`usize::MAX`: not yet).
    line_passed: Vec<usize>,
}

/// What checking one group found.
#[derive(Default)]
struct Checked {
    failures: Vec<Failure>,
    passed: Vec<usize>,
    lines_passed: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// A suppressed cell a reader can narrow down too far.
    Cell(usize),
    /// A line whose suppressed cells add up to a small known number.
    Line(usize),
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
            for d in 0..t.spec.dimensions.len() {
                // The rows of one line share every label but the d-th.
                let mut parts_of: HashMap<Vec<&str>, Vec<usize>> = HashMap::new();
                for (j, p) in t.rows.iter().enumerate() {
                    if p.labels[d] != TOTAL {
                        parts_of
                            .entry(masked(&p.labels, d))
                            .or_default()
                            .push(ids[j]);
                    }
                }
                for (i, r) in t.rows.iter().enumerate() {
                    if r.labels[d] != TOTAL {
                        continue;
                    }
                    let Some(parts) = parts_of.get(&masked(&r.labels, d)) else {
                        continue;
                    };
                    let mut parts = parts.clone();
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
        let in_line = lines
            .iter()
            .map(|l| l.members().filter(|&c| cells[c].suppressed).count())
            .collect();
        let (n, m) = (cells.len(), lines.len());
        let mut homes: Vec<Vec<(usize, Vec<String>)>> = vec![Vec::new(); n];
        let mut layouts = Vec::with_capacity(tables.len());
        for (t, (table, ids)) in tables.iter().zip(&rows).enumerate() {
            for (r, &id) in table.rows.iter().zip(ids) {
                homes[id].push((t, r.labels.clone()));
            }
            layouts.push(Layout::new(
                table.spec.dimensions.len(),
                TOTAL,
                table
                    .rows
                    .iter()
                    .map(|r| r.labels.clone())
                    .zip(ids.iter().copied()),
            ));
        }
        Ok(Grid {
            cells,
            lines,
            rows,
            layouts,
            homes,
            in_line,
            passed: vec![false; n],
            line_passed: vec![usize::MAX; m],
        })
    }

    /// Chooses further cells to suppress until nothing fails; returns how
    /// many were added.
    pub fn suppress(&mut self, p: &Params) -> Result<usize> {
        let mut added = 0;
        // A published cell too close to an earlier release's value goes
        // first: nothing else can protect it.
        let mut earlier: HashMap<&Key, Vec<u64>> = HashMap::new();
        for e in &p.earlier {
            earlier.entry(&e.key).or_default().push(e.value);
        }
        let mut close: Vec<usize> = (0..self.cells.len())
            .filter(|&c| {
                let cell = &self.cells[c];
                !cell.suppressed
                    && earlier.get(&cell.key).is_some_and(|vs| {
                        vs.iter().any(|v| {
                            let d = v.abs_diff(cell.count);
                            d > 0 && d < p.min_count
                        })
                    })
            })
            .collect();
        close.sort_by(|&a, &b| self.cells[a].name.cmp(&self.cells[b].name));
        for c in close {
            self.mark(c);
            added += 1;
        }
        // Every small suppressed cell, smallest first (they need the most
        // room), then in the order of identities, gets the cheapest cube
        // that protects it, unless one of suppressed cells already does.
        // (Larger cells suppressed for the difference rule are left to the
        // checks below: what protects them can run across tables.)
        let mut first: Vec<usize> = (0..self.cells.len())
            .filter(|&c| self.cells[c].suppressed && self.cells[c].count < p.min_count)
            .collect();
        first.sort_by(|&a, &b| {
            let (x, y) = (&self.cells[a], &self.cells[b]);
            (x.count, &x.name).cmp(&(y.count, &y.name))
        });
        for c in first {
            for d in self.cube_for(c, p).unwrap_or_default() {
                self.mark(d);
                added += 1;
            }
        }
        // Lines in the order of their names (not of rows).
        let mut line_order: Vec<usize> = (0..self.lines.len()).collect();
        line_order.sort_by(|&a, &b| self.lines[a].name.cmp(&self.lines[b].name));
        loop {
            added += self.close_weak_lines(&line_order, p);
            let components = self.components();
            let checked: Vec<Checked> = components
                .par_iter()
                .map(|comp| self.check(comp, p))
                .collect();
            let mut failures = Vec::new();
            for c in checked {
                for i in c.passed {
                    self.passed[i] = true;
                }
                for (l, k) in c.lines_passed {
                    self.line_passed[l] = k;
                }
                failures.extend(c.failures);
            }
            if failures.is_empty() {
                return Ok(added);
            }
            // In the order of identities, so row order plays no part.
            failures.sort_by_cached_key(|f| match f {
                Failure::Cell(c) => (0, self.cells[*c].name.clone()),
                Failure::Line(l) => (1, self.lines[*l].name.clone()),
            });
            failures.dedup();
            let mut touched: BTreeSet<usize> = BTreeSet::new();
            let mut progress = false;
            let first = match &failures[0] {
                Failure::Cell(c) => self.cells[*c].name.clone(),
                Failure::Line(l) => self.lines[*l].name.clone(),
            };
            for f in failures {
                let pick = match f {
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
                        // The lines where it is most exposed first; when
                        // those have nothing left to hide, the lines of its
                        // suppressed neighbours, then any line that holds a
                        // suppressed cell (what pins it is further away).
                        let by_exposure = |mut ls: Vec<usize>| {
                            ls.sort_unstable();
                            ls.dedup();
                            ls.sort_by_cached_key(|&l| {
                                (self.in_line[l], self.lines[l].name.clone())
                            });
                            ls
                        };
                        if let Some(cube) = self.cube_for(c, p) {
                            for d in cube {
                                touched.extend(self.cells[d].lines.iter().copied());
                                self.mark(d);
                                added += 1;
                            }
                            progress = true;
                            continue;
                        }
                        let own = self.cells[c].lines.clone();
                        let near: Vec<usize> = own
                            .iter()
                            .flat_map(|&l| self.lines[l].members())
                            .filter(|&m| self.cells[m].suppressed)
                            .flat_map(|m| self.cells[m].lines.iter().copied())
                            .collect();
                        self.complement(&by_exposure(own), p)
                            .or_else(|| self.complement(&by_exposure(near), p))
                            .or_else(|| {
                                let all = (0..self.lines.len())
                                    .filter(|&l| self.in_line[l] > 0)
                                    .collect();
                                self.complement(&by_exposure(all), p)
                            })
                    }
                };
                let Some(pick) = pick else {
                    continue;
                };
                touched.extend(self.cells[pick].lines.iter().copied());
                self.mark(pick);
                added += 1;
                progress = true;
            }
            if !progress {
                return Err(Error::Refused(format!(
                    "disclosure control cannot protect {first}: every cell that could hide it \
                     is already suppressed; raise min_count or remove a table"
                )));
            }
        }
    }

    /// The best published cell of the first of `lines` that has one: the
    /// one that leaves the fewest other lines with a lone suppressed cell,
    /// then the smallest, inner cells before margins, then by identity.
    /// Never a zero while zeros are published.
    fn complement(&self, lines: &[usize], p: &Params) -> Option<usize> {
        for &l in lines {
            let best = self.lines[l]
                .members()
                .filter(|&c| {
                    let cell = &self.cells[c];
                    !cell.suppressed && (cell.count > 0 || !p.zeros_published)
                })
                .min_by(|&a, &b| {
                    let key = |c: usize| {
                        let cell = &self.cells[c];
                        let lone = cell
                            .lines
                            .iter()
                            .filter(|&&m| m != l && self.in_line[m] == 0)
                            .count();
                        (lone, cell.count, cell.margin)
                    };
                    key(a)
                        .cmp(&key(b))
                        .then_with(|| self.cells[a].name.cmp(&self.cells[b].name))
                });
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// Suppresses a cell.
    fn mark(&mut self, c: usize) {
        if !std::mem::replace(&mut self.cells[c].suppressed, true) {
            for &l in &self.cells[c].lines {
                self.in_line[l] += 1;
            }
        }
    }

    /// Visits the cubes through cell `c` in each table it is in (see
    /// [`Layout::cubes`]) until `visit` returns false.
    fn each_cube(
        &self,
        c: usize,
        keep: impl Fn(usize, i64) -> bool,
        mut visit: impl FnMut(&[(usize, i64)]) -> bool,
    ) {
        for (t, labels) in &self.homes[c] {
            let mut go = true;
            self.layouts[*t].cubes(labels, &keep, |cube| {
                go = visit(cube);
                go
            });
            if !go {
                return;
            }
        }
    }

    /// Whether moving `cube`'s cells by their signs keeps every line of
    /// every table (a cube of one table can touch a margin that another
    /// table splits another way).
    fn balanced(&self, cube: &[(usize, i64)]) -> bool {
        let mut net: HashMap<usize, i64> = HashMap::new();
        for &(c, s) in cube {
            for &l in &self.cells[c].lines {
                let k = if self.lines[l].margin == c { -s } else { s };
                *net.entry(l).or_default() += k;
            }
        }
        net.values().all(|&v| v == 0)
    }

    /// The hypercube method: the cheapest cube through `c` that lets it
    /// rise to `min_count` and by `protection` (every cell that falls
    /// while it rises has that much room above the least a reader knows it
    /// is), counted by how many cells it newly suppresses, then the sum of
    /// their counts, then their identities. Never a published zero while zeros are
    /// published. Returns the cells to suppress; `None` when no cube fits
    /// or the best needs nothing new.
    fn cube_for(&self, c: usize, p: &Params) -> Option<Vec<usize>> {
        let lower = u64::from(p.zeros_published);
        let x = self.cells[c].count;
        let need = p.min_count.max(x + p.protection) - x;
        let keep = |d: usize, s: i64| {
            let cell = &self.cells[d];
            (cell.suppressed || cell.count > 0 || !p.zeros_published)
                && (s > 0 || cell.count >= lower + need)
        };
        type Best<'a> = ((usize, u64), Vec<&'a str>, Vec<usize>);
        let mut best: Option<Best> = None;
        self.each_cube(c, keep, |cube| {
            let new: Vec<usize> = cube
                .iter()
                .map(|&(d, _)| d)
                .filter(|&d| !self.cells[d].suppressed)
                .collect();
            let cost = (
                new.len(),
                new.iter().map(|&d| self.cells[d].count).sum::<u64>(),
            );
            if best.as_ref().is_some_and(|(b, _, _)| cost > *b) || !self.balanced(cube) {
                return true;
            }
            let mut names: Vec<&str> = new.iter().map(|&d| self.cells[d].name.as_str()).collect();
            names.sort_unstable();
            let better = match &best {
                None => true,
                Some((b, n, _)) => (cost, &names) < (*b, n),
            };
            if better {
                best = Some((cost, names, new));
            }
            // A cube of suppressed cells cannot be bettered.
            cost.0 > 0
        });
        best.map(|(_, _, new)| new).filter(|n| !n.is_empty())
    }

    /// Cubes through `c` of suppressed cells of the group `local` (cell to
    /// variable), as moves over the group's variables.
    fn moves(&self, c: usize, local: &rustc_hash::FxHashMap<usize, usize>) -> Vec<Move> {
        const MOST: usize = 48;
        let mut out = Vec::new();
        self.each_cube(
            c,
            |d, _| self.cells[d].suppressed && local.contains_key(&d),
            |cube| {
                out.push(cube.iter().map(|&(d, s)| (local[&d], s)).collect());
                out.len() < MOST
            },
        );
        out
    }

    /// While a line, on its own, gives a suppressed cell or sum away,
    /// suppresses another cell of it: a line with exactly one suppressed
    /// cell (the margin minus the rest), or a published margin whose
    /// suppressed cells add up to a small number, or leave one of them
    /// below `min_count` at most or narrower than `protection`. (Other
    /// lines can only narrow further; what no line gives away on its own
    /// is left to the whole-number check.) Returns how many were added.
    fn close_weak_lines(&mut self, order: &[usize], p: &Params) -> usize {
        let lower = u64::from(p.zeros_published);
        let mut added = 0;
        loop {
            let mut changed = false;
            for &l in order {
                let weak = self.in_line[l] == 1 || {
                    let line = &self.lines[l];
                    let hidden: Vec<u64> = line
                        .parts
                        .iter()
                        .filter(|&&c| self.cells[c].suppressed)
                        .map(|&c| self.cells[c].count)
                        .collect();
                    let k = hidden.len() as u64;
                    if self.cells[line.margin].suppressed || k < 2 {
                        false
                    } else {
                        let sum: u64 = hidden.iter().sum();
                        let most = sum.saturating_sub((k - 1) * lower);
                        let width = sum.saturating_sub(k * lower);
                        (sum >= 1 && sum < p.min_count)
                            || most < p.min_count
                            || width < p.protection
                    }
                };
                if weak && let Some(c) = self.complement(&[l], p) {
                    self.mark(c);
                    added += 1;
                    changed = true;
                }
            }
            if !changed {
                return added;
            }
        }
    }

    /// Suppressed cells in groups joined by lines that hold two or more of
    /// them; each group sorted.
    fn components(&self) -> Vec<Vec<usize>> {
        let n = self.cells.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for line in &self.lines {
            let mut first = None;
            for c in line.members().filter(|&c| self.cells[c].suppressed) {
                match first {
                    None => first = Some(c),
                    Some(f) => {
                        let (a, b) = (find(&mut parent, f), find(&mut parent, c));
                        if a != b {
                            parent[a.max(b)] = a.min(b);
                        }
                    }
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for c in (0..n).filter(|&c| self.cells[c].suppressed) {
            let root = find(&mut parent, c);
            groups.entry(root).or_default().push(c);
        }
        groups.into_values().collect()
    }

    /// What fails in one group of suppressed cells: the reader's system
    /// over them, checked against the true counts and the whole-number
    /// solutions found on the way. Solutions that push the unsettled cells
    /// up together, then down together, settle most of them; a cell they
    /// do not show wide enough gets programs of its own.
    fn check(&self, comp: &[usize], p: &Params) -> Checked {
        let mut out = Checked::default();
        let todo: Vec<usize> = (0..comp.len()).filter(|&i| !self.passed[comp[i]]).collect();
        let hidden_parts = |l: usize| {
            self.lines[l]
                .parts
                .iter()
                .filter(|&&c| self.cells[c].suppressed)
                .count()
        };
        let mut lines: Vec<usize> = comp
            .iter()
            .flat_map(|&c| self.cells[c].lines.iter().copied())
            .collect();
        lines.sort_unstable();
        lines.dedup();
        let todo_lines: Vec<usize> = lines
            .iter()
            .copied()
            .filter(|&l| {
                let k = hidden_parts(l);
                k >= 2 && self.line_passed[l] != k
            })
            .collect();
        if todo.is_empty() && todo_lines.is_empty() {
            return out;
        }
        let lower = if p.zeros_published { 1 } else { 0 };
        let mut sys = System::new();
        let local: rustc_hash::FxHashMap<usize, usize> = comp
            .iter()
            .map(|&c| (c, sys.add_var(lower, None)))
            .collect();
        for &l in &lines {
            let line = &self.lines[l];
            let mut terms = Vec::new();
            let mut rhs = 0.0;
            let members =
                std::iter::once((line.margin, -1.0)).chain(line.parts.iter().map(|&c| (c, 1.0)));
            for (c, sign) in members {
                match local.get(&c) {
                    Some(&v) => terms.push((v, sign)),
                    None => rhs -= sign * self.cells[c].count as f64,
                }
            }
            sys.relate(&terms, Op::Eq, rhs);
        }
        let min = p.min_count as i64;
        let width = p.protection as i64;
        // Solutions known so far: the truth first.
        let truth: Vec<i64> = comp.iter().map(|&c| self.cells[c].count as i64).collect();
        let all: Vec<usize> = (0..comp.len()).collect();
        let mut known = Witnesses::new(&all);
        known.absorb(&truth.iter().copied().enumerate().collect::<Vec<_>>());
        let settled = |k: &Witnesses, i: usize| k.settles(i, min, width);
        // Cubes of suppressed cells move the truth to other solutions.
        known.settle_by_moves(&sys, &todo, min, width, |j| self.moves(comp[j], &local));
        let cap = truth.iter().copied().max().unwrap_or(0) * 2 + min + width;
        known.spread(&sys, &todo, min, width, cap, SPREAD_ROUNDS);
        // What the spreading left: can each cell reach what it needs? (Its
        // lowest value is at most the truth, so reaching min_count and the
        // protection above the lowest known suffices.) Each question is one
        // constraint added to a solved program; a cell the answers settle
        // either way needs no program of its own.
        let mut probe: Option<Option<crate::interval::Probe>> = None;
        let mut verdict: HashMap<usize, bool> = HashMap::new();
        for &i in &todo {
            if settled(&known, i) {
                continue;
            }
            let Some(pr) = probe.get_or_insert_with(|| sys.probe(&[i])) else {
                break;
            };
            for _ in 0..4 {
                let target = min.max(known.low(i) + width);
                match pr.reach(i, target, true) {
                    (Some(w), _) => {
                        known.absorb(&w);
                        verdict.insert(i, true);
                        break;
                    }
                    (None, false) => break,
                    (None, true) if target == min => {
                        // It cannot reach min_count.
                        verdict.insert(i, false);
                        break;
                    }
                    (None, true) => match pr.reach(i, known.low(i) - 1, false) {
                        (Some(w), _) => known.absorb(&w),
                        (None, true) => {
                            // Its lowest is known, and it cannot reach the
                            // protection above it.
                            verdict.insert(i, false);
                            break;
                        }
                        (None, false) => break,
                    },
                }
            }
        }
        for &i in &todo {
            let c = comp[i];
            let ok = settled(&known, i)
                || verdict
                    .get(&i)
                    .copied()
                    .unwrap_or_else(|| match sys.extreme(&[i], true) {
                        None => false,
                        Some(e) if e.value.is_none() => true,
                        Some(e) => {
                            known.absorb(&e.witness);
                            let h = e.value.expect("bounded");
                            if !e.exact || h < min {
                                false
                            } else if h - known.low(i) >= width {
                                true
                            } else {
                                match sys.extreme(&[i], false) {
                                    None => false,
                                    Some(m) => {
                                        known.absorb(&m.witness);
                                        m.exact && h - m.value.unwrap_or(0) >= width
                                    }
                                }
                            }
                        }
                    });
            if ok {
                out.passed.push(c);
            } else {
                out.failures.push(Failure::Cell(c));
            }
        }
        for l in todo_lines {
            let vs: Vec<usize> = self.lines[l]
                .parts
                .iter()
                .filter_map(|c| local.get(c).copied())
                .collect();
            let truth_sum: i64 = vs.iter().map(|&i| truth[i]).sum();
            let varies = truth_sum == 0
                || truth_sum >= min
                || known.sums(&vs).into_iter().any(|s| s != truth_sum)
                || match (sys.extreme(&vs, true), sys.extreme(&vs, false)) {
                    (Some(a), Some(b)) => a.value != b.value,
                    _ => false,
                };
            if varies {
                out.lines_passed.push((l, vs.len()));
            } else {
                out.failures.push(Failure::Line(l));
            }
        }
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
