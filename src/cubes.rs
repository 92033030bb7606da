//! Changes to a table that keep every one of its margins: the moves a
//! reader cannot tell apart from the published table.
//!
//! In a table with a `Total` in every dimension, pick for each dimension
//! two labels: either two categories `a` and `b` (the cell at `a` goes up
//! when the one at `b` goes down), or a category `a` and the `Total` (both
//! go up together, since the total counts `a`). The cells at every
//! combination of the picked labels form a cube (2 x 2 x 2 in a three-way
//! table), and adding `t` to it with those signs leaves every line's sum
//! equal to its margin. Every change that keeps the margins is a sum of
//! such cubes.
//!
//! The suppressor uses cubes to choose the cells that hide a small one
//! (the hypercube method): a cube of withheld cells lets the small cell
//! reach any value its neighbours leave room for. Both the suppressor and
//! the audit use cubes of withheld cells to find solutions a reader cannot
//! rule out without solving a program, and check each step against their
//! own relations ([`crate::interval::System::room`]), so a cube proposed
//! here never decides a verdict on its own.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

/// One table's cells by their labels.
pub struct Layout {
    /// Per dimension, each label's position (categories sorted, then the
    /// total).
    coords: Vec<HashMap<String, u32>>,
    /// Per dimension, the number of categories (the total's position).
    inner: Vec<u32>,
    /// Per dimension, how far apart neighbours are in `at`'s numbering.
    strides: Vec<u64>,
    at: FxHashMap<u64, usize>,
}

/// Partial cubes visited per search before it stops (a five-way table
/// has tens of thousands of cubes through one cell).
const BUDGET: usize = 20_000;

impl Layout {
    /// A table of `dims` dimensions whose rows are `rows` (labels and the
    /// cell each row is); `total` is the label of a margin.
    pub fn new(
        dims: usize,
        total: &str,
        rows: impl IntoIterator<Item = (Vec<String>, usize)>,
    ) -> Layout {
        let rows: Vec<(Vec<String>, usize)> = rows.into_iter().collect();
        let mut names: Vec<Vec<&str>> = vec![Vec::new(); dims];
        for (labels, _) in &rows {
            for (d, l) in labels.iter().enumerate().take(dims) {
                if l != total {
                    names[d].push(l);
                }
            }
        }
        let mut coords = Vec::with_capacity(dims);
        let mut inner = Vec::with_capacity(dims);
        let mut strides = Vec::with_capacity(dims);
        let mut stride = 1u64;
        for v in &mut names {
            v.sort_unstable();
            v.dedup();
            let mut m: HashMap<String, u32> = v
                .iter()
                .enumerate()
                .map(|(i, l)| (l.to_string(), i as u32))
                .collect();
            m.insert(total.to_string(), v.len() as u32);
            inner.push(v.len() as u32);
            strides.push(stride);
            stride = stride.saturating_mul(v.len() as u64 + 1);
            coords.push(m);
        }
        let mut layout = Layout {
            coords,
            inner,
            strides,
            at: FxHashMap::default(),
        };
        for (labels, id) in rows {
            if let Some(o) = layout.offset(&labels) {
                layout.at.insert(o, id);
            }
        }
        layout
    }

    fn offset(&self, labels: &[String]) -> Option<u64> {
        if labels.len() != self.coords.len() {
            return None;
        }
        let mut o = 0;
        for (d, l) in labels.iter().enumerate() {
            o += u64::from(*self.coords[d].get(l)?) * self.strides[d];
        }
        Some(o)
    }

    /// Visits the cubes through the cell at `labels`, each as (cell, sign)
    /// with that cell first and signed `+1`, whose every cell passes
    /// `keep(cell, sign)`; stops when `visit` returns false or after a
    /// fixed budget of partial cubes. Cubes come in the order of the
    /// labels, so the same table in another row order gives the same
    /// cubes in the same order.
    pub fn cubes(
        &self,
        labels: &[String],
        keep: impl Fn(usize, i64) -> bool,
        mut visit: impl FnMut(&[(usize, i64)]) -> bool,
    ) {
        let Some(origin) = self.offset(labels) else {
            return;
        };
        let Some(&start) = self.at.get(&origin) else {
            return;
        };
        if !keep(start, 1) {
            return;
        }
        // Each dimension's partners, as (change of numbering, sign): those
        // whose cell, with only that label changed, passes.
        let mut options: Vec<Vec<(i64, i64)>> = Vec::with_capacity(labels.len());
        for (d, l) in labels.iter().enumerate() {
            let own = self.coords[d][l];
            let total = self.inner[d];
            let mut opts = Vec::new();
            for other in (0..=total).filter(|&o| o != own) {
                let sign = if own == total || other == total {
                    1
                } else {
                    -1
                };
                let delta = (i64::from(other) - i64::from(own)) * self.strides[d] as i64;
                let o = origin.wrapping_add_signed(delta);
                if self.at.get(&o).is_some_and(|&c| keep(c, sign)) {
                    opts.push((delta, sign));
                }
            }
            if opts.is_empty() {
                return;
            }
            options.push(opts);
        }
        let mut cube: Vec<(u64, usize, i64)> = vec![(origin, start, 1)];
        let mut budget = BUDGET;
        self.extend(&options, 0, &mut cube, &keep, &mut visit, &mut budget);
    }

    /// Adds dimension `d`'s partner to the partial cube, in every way that
    /// passes; false when the search should stop.
    fn extend(
        &self,
        options: &[Vec<(i64, i64)>],
        d: usize,
        cube: &mut Vec<(u64, usize, i64)>,
        keep: &impl Fn(usize, i64) -> bool,
        visit: &mut impl FnMut(&[(usize, i64)]) -> bool,
        budget: &mut usize,
    ) -> bool {
        if d == options.len() {
            let cells: Vec<(usize, i64)> = cube.iter().map(|&(_, c, s)| (c, s)).collect();
            return visit(&cells);
        }
        let half = cube.len();
        for &(delta, s) in &options[d] {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let mut fits = true;
            for i in 0..half {
                let o = cube[i].0.wrapping_add_signed(delta);
                let sign = cube[i].2 * s;
                match self.at.get(&o) {
                    Some(&c) if keep(c, sign) => cube.push((o, c, sign)),
                    _ => {
                        fits = false;
                        break;
                    }
                }
            }
            let go_on = !fits || self.extend(options, d + 1, cube, keep, visit, budget);
            cube.truncate(half);
            if !go_on {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(a: &str, b: &str) -> Vec<String> {
        vec![a.to_string(), b.to_string()]
    }

    /// A 2 x 2 table with margins: a[i][j], row totals, column totals.
    fn two_by_two() -> (Layout, HashMap<usize, i64>) {
        let names = ["x", "y", "Total"];
        let mut rows = Vec::new();
        let mut values = HashMap::new();
        let inner = [[3, 5], [4, 6]];
        for (i, a) in names.iter().enumerate() {
            for (j, b) in names.iter().enumerate() {
                let id = rows.len();
                let v = match (i, j) {
                    (2, 2) => 18,
                    (2, j) => inner[0][j] + inner[1][j],
                    (i, 2) => inner[i][0] + inner[i][1],
                    (i, j) => inner[i][j],
                };
                values.insert(id, v);
                rows.push((labels(a, b), id));
            }
        }
        (Layout::new(2, "Total", rows), values)
    }

    #[test]
    fn every_cube_keeps_every_margin() {
        let (layout, values) = two_by_two();
        let mut n = 0;
        for a in ["x", "y", "Total"] {
            for b in ["x", "y", "Total"] {
                layout.cubes(
                    &labels(a, b),
                    |_, _| true,
                    |cube| {
                        n += 1;
                        assert_eq!(cube.len(), 4);
                        let mut v = values.clone();
                        for &(c, s) in cube {
                            *v.get_mut(&c).unwrap() += 7 * s;
                        }
                        // Rows and columns still add up.
                        let at = |i: usize, j: usize| v[&(i * 3 + j)];
                        for i in 0..3 {
                            assert_eq!(at(i, 0) + at(i, 1), at(i, 2));
                            assert_eq!(at(0, i) + at(1, i), at(2, i));
                        }
                        true
                    },
                );
            }
        }
        // Through each of the 9 cells: 2 partners per dimension.
        assert_eq!(n, 9 * 4);
    }

    #[test]
    fn cubes_leave_out_cells_that_do_not_pass() {
        let (layout, _) = two_by_two();
        let mut seen = Vec::new();
        // Only the four inner cells may move: one cube, with alternating
        // signs.
        layout.cubes(
            &labels("x", "x"),
            |c, _| [0, 1, 3, 4].contains(&c),
            |cube| {
                seen.push(cube.to_vec());
                true
            },
        );
        assert_eq!(seen, vec![vec![(0, 1), (3, -1), (1, -1), (4, 1)]]);
    }
}
