//! What a reader can still believe about unknown whole numbers tied by
//! linear relations: the smallest and largest value of a sum of them, over
//! every whole-number solution.
//!
//! Disclosure control asks this question for every suppressed cell (the
//! suppressor while it chooses cells, and the audit, written apart, after).
//! Each question is two linear programs over the variables it is connected
//! to (variables sharing no relation, directly or through others, play no
//! part), solved with `microlp`. A linear optimum can be fractional where
//! the relations are not a plain sums-of-cells network (three-way tables,
//! tables sharing margins, percentages); then a depth-first branch and
//! bound on whole numbers follows, so the answer is the whole-number range,
//! which can be narrower than the linear one. Its search is capped: when
//! the cap is reached the range returned is the one proven by whole-number
//! solutions found (a reader can believe at least that much), and it is
//! marked as not exact.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem, Solution, Variable};

/// How a relation compares its left side with its right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<=`
    Le,
    /// `>=`
    Ge,
}

/// One relation: `sum(coefficient * variable) op rhs`.
#[derive(Debug, Clone)]
pub struct Relation {
    /// Variables and their coefficients.
    pub terms: Vec<(usize, f64)>,
    /// The comparison.
    pub op: Op,
    /// The right side.
    pub rhs: f64,
}

/// The range of a sum over every whole-number solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Smallest value.
    pub low: i64,
    /// Largest value (`None`: unbounded).
    pub high: Option<i64>,
    /// Whether both ends are proven; when not, the range is what found
    /// solutions show (the true range is at least as wide).
    pub exact: bool,
}

/// Linear programs solved by this process (for benchmarks).
static SOLVES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many linear programs this process has solved (branch-and-bound
/// nodes not counted).
pub fn solves() -> usize {
    SOLVES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A change to a solution: (variable, coefficient) pairs.
pub type Move = Vec<(usize, i64)>;

/// Branch-and-bound nodes per bound before giving up on proving it.
const NODE_LIMIT: usize = 2_000;
const EPS: f64 = 1e-6;
/// How many moves deep [`Witnesses::climb`] goes to free a move held back
/// by a variable at its bound.
pub const DEPTH: usize = 1;

/// Variables with bounds, and relations between them.
#[derive(Debug, Clone, Default)]
pub struct System {
    bounds: Vec<(f64, f64)>,
    relations: Vec<Relation>,
    /// For each variable, the relations it is in.
    of_var: Vec<Vec<usize>>,
    /// For each variable, its coefficient in each of those relations.
    coef_of_var: Vec<Vec<f64>>,
}

impl System {
    /// An empty system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a whole-number variable with these bounds (`None`: no upper
    /// bound); returns its index.
    pub fn add_var(&mut self, low: i64, high: Option<i64>) -> usize {
        self.bounds
            .push((low as f64, high.map_or(f64::INFINITY, |h| h as f64)));
        self.of_var.push(Vec::new());
        self.coef_of_var.push(Vec::new());
        self.bounds.len() - 1
    }

    /// A variable's lower bound.
    pub fn lower(&self, v: usize) -> i64 {
        self.bounds[v].0.ceil() as i64
    }

    /// Number of variables.
    pub fn vars(&self) -> usize {
        self.bounds.len()
    }

    /// Adds a relation. Terms on one variable are added up; a relation
    /// without variables is dropped.
    pub fn relate(&mut self, terms: &[(usize, f64)], op: Op, rhs: f64) {
        let mut t: Vec<(usize, f64)> = Vec::with_capacity(terms.len());
        for &(v, c) in terms {
            match t.iter_mut().find(|(w, _)| *w == v) {
                Some(x) => x.1 += c,
                None => t.push((v, c)),
            }
        }
        t.retain(|(_, c)| *c != 0.0);
        if t.is_empty() {
            return;
        }
        let i = self.relations.len();
        for &(v, c) in &t {
            self.of_var[v].push(i);
            self.coef_of_var[v].push(c);
        }
        self.relations.push(Relation { terms: t, op, rhs });
    }

    /// The same system with every variable at most `cap`: its solutions
    /// are solutions of this one, and no sum is unbounded in it (for
    /// finding solutions that spread values out).
    pub fn capped(&self, cap: i64) -> System {
        let mut s = self.clone();
        for b in &mut s.bounds {
            b.1 = b.1.min(cap as f64);
        }
        s
    }

    /// How far a solution may be moved along `m` ((variable, coefficient)):
    /// the largest whole `t` up and down such that `at + t * m` keeps every
    /// bound and relation, where `at` gives the solution's values (`None`
    /// for a variable it does not cover). `None` when `m` changes the
    /// left side of an equation, or that of an inequality over variables
    /// `at` does not cover.
    pub fn room(
        &self,
        at: impl Fn(usize) -> Option<i64>,
        m: &[(usize, i64)],
    ) -> Option<(i64, i64)> {
        const FAR: f64 = 1e15;
        let (mut up, mut down) = (FAR, FAR);
        let mut limit = |x: f64, slope: f64, lo: f64, hi: f64| {
            // lo <= x + t * slope <= hi
            if slope > 0.0 {
                up = up.min((hi - x) / slope);
                down = down.min((x - lo) / slope);
            } else if slope < 0.0 {
                up = up.min((x - lo) / -slope);
                down = down.min((hi - x) / -slope);
            }
        };
        // Each touched relation's change per step of t.
        let mut slopes: Vec<(usize, f64)> = Vec::new();
        for &(v, k) in m {
            let x = at(v)? as f64;
            let (lo, hi) = self.bounds[v];
            limit(x, k as f64, lo, hi);
            for (&r, &c) in self.of_var[v].iter().zip(&self.coef_of_var[v]) {
                match slopes.iter_mut().find(|(q, _)| *q == r) {
                    Some(e) => e.1 += c * k as f64,
                    None => slopes.push((r, c * k as f64)),
                }
            }
        }
        for (r, slope) in slopes {
            let rel = &self.relations[r];
            if slope.abs() <= EPS {
                continue;
            }
            if rel.op == Op::Eq {
                return None;
            }
            let mut value = 0.0;
            for &(v, c) in &rel.terms {
                value += c * at(v)? as f64;
            }
            match rel.op {
                Op::Le => limit(value, slope, f64::NEG_INFINITY, rel.rhs + EPS),
                _ => limit(value, slope, rel.rhs - EPS, f64::INFINITY),
            }
        }
        let whole = |t: f64| (t + EPS).floor().clamp(0.0, FAR) as i64;
        Some((whole(up), whole(down)))
    }

    /// The variables in groups that share no relation, each group in
    /// order, groups in the order of their first variable.
    pub fn components(&self) -> Vec<Vec<usize>> {
        let mut done = vec![false; self.bounds.len()];
        let mut out = Vec::new();
        for v in 0..self.bounds.len() {
            if done[v] {
                continue;
            }
            let (vars, _) = self.component(&[v]);
            for &w in &vars {
                done[w] = true;
            }
            out.push(vars);
        }
        out
    }

    /// The largest (or smallest) whole-number value of `sum(objective)`,
    /// with a solution that reaches it: (value, whole-number solution as
    /// (variable, value) over the variables connected to the objective).
    /// `None` when there is no solution; a value of `None` when unbounded.
    pub fn extreme(&self, objective: &[usize], maximise: bool) -> Option<Extreme> {
        let (vars, rels) = self.component(objective);
        let dir = if maximise {
            OptimizationDirection::Maximize
        } else {
            OptimizationDirection::Minimize
        };
        let o = self.optimise(&vars, &rels, objective, dir)?;
        Some(Extreme {
            value: o.value,
            exact: o.exact,
            witness: o
                .witness
                .map(|w| vars.iter().copied().zip(w).collect())
                .unwrap_or_default(),
        })
    }

    /// A solved starting point over the variables connected to `vars`
    /// (the smallest total), from which questions of the form "can this
    /// variable reach that value?" are answered by adding one constraint and
    /// re-optimising from its basis (the dual simplex), far cheaper than
    /// solving a new program. `None` when there is no solution.
    pub fn probe(&self, vars: &[usize]) -> Option<Probe> {
        let (vars, rels) = self.component(vars);
        let (problem, xs) = self.problem(&vars, &rels, &vars, OptimizationDirection::Minimize);
        SOLVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = problem.solve().ok()?;
        Some(Probe {
            base,
            position: vars.iter().enumerate().map(|(i, &v)| (v, i)).collect(),
            xs,
            vars,
        })
    }

    /// The variables connected to `start` through relations, in order.
    fn component(&self, start: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let mut seen = vec![false; self.bounds.len()];
        let mut rel_seen = vec![false; self.relations.len()];
        let mut stack: Vec<usize> = start.to_vec();
        let mut vars = Vec::new();
        let mut rels = Vec::new();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v], true) {
                continue;
            }
            vars.push(v);
            for &r in &self.of_var[v] {
                if !std::mem::replace(&mut rel_seen[r], true) {
                    rels.push(r);
                    stack.extend(self.relations[r].terms.iter().map(|(w, _)| *w));
                }
            }
        }
        vars.sort_unstable();
        rels.sort_unstable();
        (vars, rels)
    }

    /// The whole-number range of `sum(objective)`; `None` when no
    /// whole-number solution exists.
    pub fn range(&self, objective: &[usize]) -> Option<Range> {
        let (vars, rels) = self.component(objective);
        let low = self.optimise(&vars, &rels, objective, OptimizationDirection::Minimize)?;
        let high = self.optimise(&vars, &rels, objective, OptimizationDirection::Maximize)?;
        Some(Range {
            low: low.value.expect("a minimum over bounded-below variables"),
            high: high.value,
            exact: low.exact && high.exact,
        })
    }

    /// The program over `vars` (a group, in order) and its relations
    /// `rels`: minimise or maximise the sum of `objective`.
    fn problem(
        &self,
        vars: &[usize],
        rels: &[usize],
        objective: &[usize],
        dir: OptimizationDirection,
    ) -> (Problem, Vec<Variable>) {
        let mut problem = Problem::new(dir);
        let mut local = vec![usize::MAX; self.bounds.len()];
        for (i, &v) in vars.iter().enumerate() {
            local[v] = i;
        }
        let mut cost = vec![0.0; vars.len()];
        for &o in objective {
            cost[local[o]] += 1.0;
        }
        let xs: Vec<Variable> = vars
            .iter()
            .zip(&cost)
            .map(|(&v, &c)| problem.add_var(c, self.bounds[v]))
            .collect();
        for &r in rels {
            let rel = &self.relations[r];
            let expr: Vec<(Variable, f64)> =
                rel.terms.iter().map(|&(v, c)| (xs[local[v]], c)).collect();
            let op = match rel.op {
                Op::Eq => ComparisonOp::Eq,
                Op::Le => ComparisonOp::Le,
                Op::Ge => ComparisonOp::Ge,
            };
            problem.add_constraint(expr.as_slice(), op, rel.rhs);
        }
        (problem, xs)
    }

    fn optimise(
        &self,
        vars: &[usize],
        rels: &[usize],
        objective: &[usize],
        dir: OptimizationDirection,
    ) -> Option<Optimum> {
        let (problem, xs) = self.problem(vars, rels, objective, dir);
        SOLVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = match problem.solve() {
            Ok(s) => s,
            Err(microlp::Error::Unbounded) => {
                return Some(Optimum {
                    value: None,
                    exact: true,
                    witness: None,
                });
            }
            Err(_) => return None,
        };
        branch_and_bound(root, &xs, dir == OptimizationDirection::Maximize)
    }
}

/// Whole-number solutions found so far over a group of variables, and each
/// variable's lowest and highest value in them: values a reader cannot rule
/// out, found without a program of their own.
pub struct Witnesses {
    /// Position of each variable of the group.
    index: FxHashMap<usize, usize>,
    /// The first solution, over the group in order.
    base: Option<Vec<i64>>,
    /// Every later solution, as the values where it differs from `base`.
    others: Vec<Vec<(usize, i64)>>,
    lo: Vec<i64>,
    hi: Vec<i64>,
    /// For each variable, the solution where it is lowest and highest (0:
    /// the first, `k`: `others[k - 1]`).
    lo_at: Vec<usize>,
    hi_at: Vec<usize>,
    /// For each variable, the later solutions where it differs from the
    /// first (positions in `others`).
    touched: Vec<Vec<u32>>,
}

impl Witnesses {
    /// None yet, over these variables.
    pub fn new(vars: &[usize]) -> Self {
        Witnesses {
            index: vars.iter().enumerate().map(|(i, &v)| (v, i)).collect(),
            base: None,
            others: Vec::new(),
            lo: vec![i64::MAX; vars.len()],
            hi: vec![i64::MIN; vars.len()],
            lo_at: vec![0; vars.len()],
            hi_at: vec![0; vars.len()],
            touched: vec![Vec::new(); vars.len()],
        }
    }

    /// Takes in a solution over the whole group (a partial one is ignored).
    pub fn absorb(&mut self, w: &[(usize, i64)]) {
        if w.len() != self.lo.len() {
            return;
        }
        let mut v = vec![0; w.len()];
        for &(var, x) in w {
            v[self.index[&var]] = x;
        }
        self.take(v);
    }

    /// Takes in a solution over the group, in the group's order.
    fn take(&mut self, v: Vec<i64>) {
        let at = if self.base.is_some() {
            self.others.len() + 1
        } else {
            0
        };
        for (i, &x) in v.iter().enumerate() {
            if x < self.lo[i] {
                (self.lo[i], self.lo_at[i]) = (x, at);
            }
            if x > self.hi[i] {
                (self.hi[i], self.hi_at[i]) = (x, at);
            }
        }
        match &self.base {
            None => self.base = Some(v),
            Some(b) => {
                let diff: Vec<(usize, i64)> = v
                    .iter()
                    .zip(b)
                    .enumerate()
                    .filter(|(_, (x, y))| x != y)
                    .map(|(i, (x, _))| (i, *x))
                    .collect();
                // An empty difference is kept too, so that positions hold.
                let k = self.others.len() as u32;
                for &(i, _) in &diff {
                    self.touched[i].push(k);
                }
                self.others.push(diff);
            }
        }
    }

    /// Moves the latest solution towards the middle of what `moves` allow
    /// (each to halfway between as far up and as far down as the system
    /// lets it, no further than `cap` either way), in turn, and takes in
    /// the solution reached: from the middle, single moves reach further
    /// both ways than from a corner, which is where programs leave their
    /// solutions. Every step is checked against the whole system, as in
    /// [`climb`](Self::climb).
    pub fn centre<'m, I>(&mut self, sys: &System, cap: i64, moves: I)
    where
        I: IntoIterator<Item = &'m [(usize, i64)]>,
    {
        // From the latest solution (the middle found so far).
        let Some(mut point) = self.point(self.others.len()) else {
            return;
        };
        let mut moved = false;
        for m in moves {
            if m.iter().any(|(w, _)| !self.index.contains_key(w)) {
                continue;
            }
            let index = &self.index;
            let at = |w: usize| index.get(&w).map(|&i| point[i]);
            let Some((up, down)) = sys.room(at, m) else {
                continue;
            };
            let t = (up.min(cap) - down.min(cap)) / 2;
            if t == 0 {
                continue;
            }
            for &(w, c) in m {
                point[self.index[&w]] += t * c;
            }
            moved = true;
        }
        if moved {
            self.take(point);
        }
    }

    /// Solution `k` (0: the first, `k`: `others[k - 1]`), whole.
    fn point(&self, k: usize) -> Option<Vec<i64>> {
        let mut p = self.base.clone()?;
        if k > 0 {
            for &(i, x) in self.others.get(k - 1)? {
                p[i] = x;
            }
        }
        Some(p)
    }

    /// The lowest value of `v` seen.
    pub fn low(&self, v: usize) -> i64 {
        self.lo[self.index[&v]]
    }

    /// The highest value of `v` seen.
    pub fn high(&self, v: usize) -> i64 {
        self.hi[self.index[&v]]
    }

    /// Whether `v` is seen to reach `min` and to span at least `width`.
    pub fn settles(&self, v: usize, min: i64, width: i64) -> bool {
        let i = self.index[&v];
        self.hi[i] >= min && self.hi[i] - self.lo[i] >= width
    }

    /// The sum of `vs` in each solution seen (solutions where none of
    /// `vs` differs from the first are given once, as the first).
    pub fn sums(&self, vs: &[usize]) -> Vec<i64> {
        let Some(base) = &self.base else {
            return Vec::new();
        };
        let at: Vec<usize> = vs.iter().map(|v| self.index[v]).collect();
        let total: i64 = at.iter().map(|&i| base[i]).sum();
        let mut points: Vec<u32> = at
            .iter()
            .flat_map(|&i| self.touched[i].iter().copied())
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut out = vec![total];
        for k in points {
            let diff = &self.others[k as usize];
            let change: i64 = at
                .iter()
                .filter_map(|&i| {
                    diff.binary_search_by_key(&i, |&(j, _)| j)
                        .ok()
                        .map(|p| diff[p].1 - base[i])
                })
                .sum();
            out.push(total + change);
        }
        out
    }

    /// For each of `vars` not yet settled (see [`settles`](Self::settles)):
    /// climbs to what it needs (`min`, and `width` above its lowest), or,
    /// when it already reaches `min`, down to `width` below its highest,
    /// along the moves `moves_of` gives (each variable's asked for once).
    pub fn settle_by_moves<F>(
        &mut self,
        sys: &System,
        vars: &[usize],
        min: i64,
        width: i64,
        moves_of: F,
    ) where
        F: Fn(usize) -> Vec<Move>,
    {
        let cache: std::cell::RefCell<FxHashMap<usize, Vec<Move>>> = Default::default();
        let cached = |w: usize| {
            cache
                .borrow_mut()
                .entry(w)
                .or_insert_with(|| moves_of(w))
                .clone()
        };
        for &v in vars {
            if self.settles(v, min, width) {
                continue;
            }
            let target = min.max(self.low(v) + width);
            if !self.climb(sys, v, target, true, &cached) && self.high(v) >= min {
                let floor = self.high(v) - width;
                self.climb(sys, v, floor, false, &cached);
            }
        }
    }

    /// Climbs from the solution where `v` is highest (lowest when not
    /// `up`) along the moves `moves_of(v)` gives (changes that keep every
    /// equation, as (variable, coefficient), with `v`'s coefficient
    /// positive), each as far as the system lets it and no further than
    /// needed for `v` to reach `target` (at least `target` when `up`, at
    /// most when not), and takes in the solution reached. Where a move is
    /// held back by a variable at its bound, that variable is first moved
    /// off it by moves of its own (to a depth of [`DEPTH`], never through
    /// a variable already in play). Every step is checked against the
    /// whole system ([`System::room`]): a move that would break a relation
    /// or a bound is not taken, so what is taken in is a solution whatever
    /// the moves. Returns whether `v` reached `target`.
    pub fn climb<F>(&mut self, sys: &System, v: usize, target: i64, up: bool, moves_of: &F) -> bool
    where
        F: Fn(usize) -> Vec<Vec<(usize, i64)>>,
    {
        let iv = self.index[&v];
        let Some(mut point) = self.point(if up { self.hi_at[iv] } else { self.lo_at[iv] }) else {
            return false;
        };
        let dir = if up { 1 } else { -1 };
        let gap = (target - point[iv]) * dir;
        if gap <= 0 {
            return true;
        }
        // Single moves first; freeing held moves only for what is left.
        let mut busy = Vec::new();
        let mut got = self.raise(sys, &mut point, v, dir, gap, 0, moves_of, &mut busy);
        if got < gap {
            got += self.raise(
                sys,
                &mut point,
                v,
                dir,
                gap - got,
                DEPTH,
                moves_of,
                &mut busy,
            );
        }
        if got > 0 {
            self.take(point);
        }
        got >= gap
    }

    /// Moves `v` by up to `amount` in direction `dir` from `point`, in
    /// place; returns how far it moved.
    #[allow(clippy::too_many_arguments)]
    fn raise<F>(
        &self,
        sys: &System,
        point: &mut [i64],
        v: usize,
        dir: i64,
        amount: i64,
        depth: usize,
        moves_of: &F,
        busy: &mut Vec<usize>,
    ) -> i64
    where
        F: Fn(usize) -> Vec<Vec<(usize, i64)>>,
    {
        let mut got = 0;
        for m in moves_of(v) {
            if got >= amount {
                break;
            }
            let Some(k) = m.iter().find(|(w, _)| *w == v).map(|(_, k)| *k) else {
                continue;
            };
            // Never through a variable being moved further up (it would
            // undo what that move is for).
            if k <= 0
                || m.iter()
                    .any(|(w, _)| !self.index.contains_key(w) || (*w != v && busy.contains(w)))
            {
                continue;
            }
            // Along `m` times `dir`, `v` moves by `dir * k` a step.
            let m: Vec<(usize, i64)> = m.iter().map(|&(w, c)| (w, c * dir)).collect();
            let want = (amount - got + k - 1) / k;
            let room = |point: &[i64]| {
                let at = |w: usize| self.index.get(&w).map(|&i| point[i]);
                sys.room(at, &m).map(|(up, _)| up)
            };
            let Some(mut t) = room(point) else {
                continue;
            };
            if t < want && depth > 0 {
                // Lift what holds it back off its lower bound first.
                let held: Vec<(usize, i64)> = m
                    .iter()
                    .filter(|&&(w, c)| {
                        c < 0 && {
                            let slack = point[self.index[&w]] - sys.lower(w);
                            slack / -c < want
                        }
                    })
                    .map(|&(w, c)| (w, want * -c - (point[self.index[&w]] - sys.lower(w))))
                    .collect();
                busy.push(v);
                for (w, short) in held {
                    self.raise(sys, point, w, 1, short, depth - 1, moves_of, busy);
                }
                busy.pop();
                t = room(point).unwrap_or(0);
            }
            let t = t.min(want);
            if t <= 0 {
                continue;
            }
            for &(w, c) in &m {
                point[self.index[&w]] += t * c;
            }
            got += t * k;
        }
        got
    }

    /// Adds solutions that push the variables of `vars` not yet settled
    /// (see [`settles`](Self::settles)) up together, then down together,
    /// every variable at most `cap` (so that no sum is unbounded), for up to
    /// `rounds` rounds while that settles more of them.
    pub fn spread(
        &mut self,
        sys: &System,
        vars: &[usize],
        min: i64,
        width: i64,
        cap: i64,
        rounds: usize,
    ) {
        let capped = sys.capped(cap);
        let open = |w: &Self| -> Vec<usize> {
            vars.iter()
                .copied()
                .filter(|&v| !w.settles(v, min, width))
                .collect()
        };
        for _ in 0..rounds {
            let before = open(self);
            if before.is_empty() {
                return;
            }
            for up in [true, false] {
                if let Some(e) = capped.extreme(&before, up) {
                    self.absorb(&e.witness);
                }
            }
            if open(self).len() == before.len() {
                return;
            }
        }
    }
}

/// A solved starting point (see [`System::probe`]).
pub struct Probe {
    base: Solution,
    position: HashMap<usize, usize>,
    xs: Vec<Variable>,
    vars: Vec<usize>,
}

impl Probe {
    /// The starting point itself, if it is whole.
    pub fn start(&self) -> Option<Vec<(usize, i64)>> {
        whole(&self.base, &self.xs, &self.vars)
    }

    /// A whole-number solution with `var` at least `at_least` (or at most
    /// `at_most`, when `up` is false), if the re-optimised vertex is whole;
    /// `None` when there is none, or when the vertex is fractional (then
    /// ask [`System::extreme`]). The second value says whether the
    /// constraint was proven infeasible.
    pub fn reach(&self, var: usize, bound: i64, up: bool) -> (Option<Vec<(usize, i64)>>, bool) {
        let Some(&i) = self.position.get(&var) else {
            return (None, false);
        };
        let op = if up {
            ComparisonOp::Ge
        } else {
            ComparisonOp::Le
        };
        match self
            .base
            .clone()
            .add_constraint([(self.xs[i], 1.0)], op, bound as f64)
        {
            Ok(s) => (whole(&s, &self.xs, &self.vars), false),
            Err(microlp::Error::Infeasible) => (None, true),
            Err(_) => (None, false),
        }
    }
}

/// A solution's values as whole numbers, or `None` if one is fractional.
fn whole(s: &Solution, xs: &[Variable], vars: &[usize]) -> Option<Vec<(usize, i64)>> {
    xs.iter()
        .zip(vars)
        .map(|(&x, &v)| {
            let val = s.var_value(x);
            ((val - val.round()).abs() <= EPS).then_some((v, val.round() as i64))
        })
        .collect()
}

/// An optimum and a whole-number solution reaching it.
#[derive(Debug, Clone)]
pub struct Extreme {
    /// The optimum (`None`: unbounded).
    pub value: Option<i64>,
    /// Whether it is proven (else it is the best solution found).
    pub exact: bool,
    /// A whole-number solution with that value (empty when unbounded).
    pub witness: Vec<(usize, i64)>,
}

struct Optimum {
    value: Option<i64>,
    exact: bool,
    witness: Option<Vec<i64>>,
}

/// Depth first, branching on the first fractional variable; the objective
/// of a whole-number solution is whole, so a node whose linear bound
/// (rounded towards the incumbent's side) is not better is cut.
fn branch_and_bound(root: Solution, xs: &[Variable], maximise: bool) -> Option<Optimum> {
    let round_bound = |v: f64| {
        if maximise {
            (v + EPS).floor()
        } else {
            (v - EPS).ceil()
        }
    };
    let better = |a: f64, b: f64| if maximise { a > b } else { a < b };
    let root_bound = round_bound(root.objective());
    let mut best: Option<f64> = None;
    let mut witness: Option<Vec<i64>> = None;
    let mut stack = vec![root];
    let mut nodes = 0;
    let mut exhausted = true;
    while let Some(s) = stack.pop() {
        nodes += 1;
        if nodes > NODE_LIMIT {
            exhausted = false;
            break;
        }
        let bound = round_bound(s.objective());
        if best.is_some_and(|b| !better(bound, b)) {
            continue;
        }
        let fractional = xs.iter().find_map(|&x| {
            let v = s.var_value(x);
            ((v - v.round()).abs() > EPS).then_some((x, v))
        });
        match fractional {
            None => {
                best = Some(s.objective().round());
                witness = Some(xs.iter().map(|&x| s.var_value(x).round() as i64).collect());
                if best == Some(root_bound) {
                    break;
                }
            }
            Some((x, v)) => {
                // The side nearer the linear optimum last, so it is
                // explored first.
                let down = s
                    .clone()
                    .add_constraint([(x, 1.0)], ComparisonOp::Le, v.floor());
                let up = s.add_constraint([(x, 1.0)], ComparisonOp::Ge, v.ceil());
                let (first, second) = if v - v.floor() < 0.5 {
                    (up, down)
                } else {
                    (down, up)
                };
                stack.extend(first.ok());
                stack.extend(second.ok());
            }
        }
    }
    let best = best?;
    Some(Optimum {
        value: Some(best as i64),
        exact: exhausted || best == root_bound,
        witness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_stops_at_bounds_and_relations_and_refuses_to_change_an_equation() {
        let mut s = System::new();
        let (x, y, z) = (s.add_var(1, None), s.add_var(1, None), s.add_var(0, None));
        s.relate(&[(x, 1.0), (y, 1.0)], Op::Eq, 10.0);
        let at = |v: usize| Some([3, 7, 2][v]);
        // x up while y down: y stops at 1; x down: x stops at 1.
        assert_eq!(s.room(at, &[(x, 1), (y, -1)]), Some((6, 2)));
        // x alone would change x + y.
        assert_eq!(s.room(at, &[(x, 1)]), None);
        // z has no upper bound and no relation: far up, down to 0.
        assert_eq!(s.room(at, &[(z, 1)]).map(|r| r.1), Some(2));
        s.relate(&[(x, 1.0), (z, 1.0)], Op::Le, 8.0);
        assert_eq!(s.room(at, &[(x, 1), (y, -1)]), Some((3, 2)));
    }

    #[test]
    fn a_climb_frees_a_held_move_and_every_solution_it_takes_keeps_the_relations() {
        // A 2 x 3 table with its row and column sums known, every cell at
        // least 1:  a b c | 7
        //           d e f | 11
        let mut s = System::new();
        let v: Vec<usize> = (0..6).map(|_| s.add_var(1, None)).collect();
        let (a, b, c, d, e, f) = (v[0], v[1], v[2], v[3], v[4], v[5]);
        let start = [1, 1, 5, 5, 5, 1];
        let rows = [vec![a, b, c], vec![d, e, f]];
        let cols = [vec![a, d], vec![b, e], vec![c, f]];
        for set in rows.iter().chain(&cols) {
            let terms: Vec<(usize, f64)> = set.iter().map(|&x| (x, 1.0)).collect();
            let total: i64 = set.iter().map(|&x| start[x]).sum();
            s.relate(&terms, Op::Eq, total as f64);
        }
        let mut w = Witnesses::new(&v);
        w.absorb(&v.iter().map(|&x| (x, start[x])).collect::<Vec<_>>());
        // Raising a takes b down, and b is at its bound: the only move of
        // a is held until b is raised by a move of its own.
        let moves_of = |x: usize| -> Vec<Move> {
            if x == a {
                vec![vec![(a, 1), (b, -1), (d, -1), (e, 1)]]
            } else if x == b {
                vec![vec![(b, 1), (c, -1), (e, -1), (f, 1)]]
            } else {
                Vec::new()
            }
        };
        assert!(w.climb(&s, a, 4, true, &moves_of));
        assert_eq!(w.high(a), 4);
        // In every solution taken in, rows and columns keep their sums.
        for set in rows.iter().chain(&cols) {
            let total: i64 = set.iter().map(|&x| start[x]).sum();
            assert!(w.sums(set).iter().all(|&t| t == total));
        }
        assert!((0..6).all(|x| w.low(v[x]) >= 1));
        // Without the freeing move, a cannot rise at all.
        let mut w2 = Witnesses::new(&v);
        w2.absorb(&v.iter().map(|&x| (x, start[x])).collect::<Vec<_>>());
        let only_a = |x: usize| if x == a { moves_of(a) } else { Vec::new() };
        assert!(!w2.climb(&s, a, 4, true, &only_a));
        assert_eq!(w2.high(a), 1);
    }

    #[test]
    fn a_row_with_a_known_total() {
        // 15 = 10 + x + y, x, y >= 1.
        let mut s = System::new();
        let x = s.add_var(1, None);
        let y = s.add_var(1, None);
        s.relate(&[(x, 1.0), (y, 1.0)], Op::Eq, 5.0);
        assert_eq!(
            s.range(&[x]),
            Some(Range {
                low: 1,
                high: Some(4),
                exact: true
            })
        );
        assert_eq!(
            s.range(&[x, y]).map(|r| (r.low, r.high)),
            Some((5, Some(5)))
        );
    }

    #[test]
    fn unrelated_and_unbounded_variables() {
        let mut s = System::new();
        let x = s.add_var(0, None);
        let y = s.add_var(2, Some(9));
        assert_eq!(s.range(&[x]).map(|r| (r.low, r.high)), Some((0, None)));
        assert_eq!(s.range(&[y]).map(|r| (r.low, r.high)), Some((2, Some(9))));
    }

    #[test]
    fn whole_numbers_are_narrower_than_the_linear_range() {
        // 2x + 2y = 3 has linear solutions but no whole ones; 2x + 2y = 4
        // with x <= 1.5 (from 2x <= 3) gives x in 0..=1 whole.
        let mut s = System::new();
        let x = s.add_var(0, None);
        let y = s.add_var(0, None);
        s.relate(&[(x, 2.0), (y, 2.0)], Op::Eq, 3.0);
        assert_eq!(s.range(&[x]), None);
        let mut s = System::new();
        let x = s.add_var(0, None);
        let y = s.add_var(0, None);
        s.relate(&[(x, 2.0), (y, 2.0)], Op::Eq, 4.0);
        s.relate(&[(x, 2.0)], Op::Le, 3.0);
        assert_eq!(s.range(&[x]).map(|r| (r.low, r.high)), Some((0, Some(1))));
    }

    #[test]
    fn a_percentage_pins_a_numerator() {
        // n / 207 shown as 85.5%: 85.45 <= 100 n / 207 < 85.55.
        let mut s = System::new();
        let n = s.add_var(0, None);
        s.relate(&[(n, 100.0)], Op::Ge, 85.45 * 207.0);
        s.relate(&[(n, 100.0)], Op::Le, 85.55 * 207.0);
        assert_eq!(
            s.range(&[n]).map(|r| (r.low, r.high)),
            Some((177, Some(177)))
        );
    }
}
