//! Disclosure control on tables made in code: the cases public tools got
//! wrong, a property test that enumerates every table a reader could
//! believe, and metamorphic tests.

use std::collections::{BTreeSet, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetally::audit;
use safetally::report::disclosure::{Thresholds, primary, reader_view};
use safetally::report::output::table_csv;
use safetally::report::secondary::{Params, secondary};
use safetally::report::tables::{Flag, QuerySpec, TOTAL, Table, complete};

/// A table of `dims` (name, values) from its inner cells, margins added.
fn grid(
    name: &str,
    population: &str,
    where_: &[(&str, &str)],
    dims: &[(&str, &[&str])],
    cells: &[(&[&str], u64)],
) -> Table {
    let names: Vec<&str> = dims.iter().map(|(d, _)| *d).collect();
    let spec = QuerySpec::synthetic(name, population, where_, &names);
    let values: Vec<Vec<String>> = dims
        .iter()
        .map(|(_, v)| {
            v.iter()
                .map(|s| s.to_string())
                .chain([TOTAL.to_string()])
                .collect()
        })
        .collect();
    let base: HashMap<Vec<String>, u64> = cells
        .iter()
        .map(|(l, c)| (l.iter().map(|s| s.to_string()).collect(), *c))
        .collect();
    complete(spec, &values, &base)
}

fn params(min_count: u64, protection: u64, zeros: bool) -> Params {
    Params {
        min_count,
        protection,
        zeros_published: zeros,
        earlier: Vec::new(),
    }
}

/// Primary then secondary suppression, as `report` does.
fn protect(tables: &mut [Table], p: &Params) -> usize {
    primary(
        tables,
        &Thresholds {
            min_count: p.min_count,
            min_denominator: 20,
            publish_zeros: p.zeros_published,
        },
    );
    secondary(tables, p).expect("protectable")
}

fn audit_params(p: &Params) -> audit::Params {
    audit::Params {
        min_count: p.min_count,
        protection: p.protection,
        zeros_published: p.zeros_published,
        rounding: None,
        exact: true,
    }
}

fn suppressed(t: &Table) -> BTreeSet<String> {
    t.rows
        .iter()
        .filter(|r| r.flag != Flag::None)
        .map(|r| r.labels.join("/"))
        .collect()
}

#[test]
fn two_ones_behind_a_published_ten_and_three() {
    // 15 = 10 + 3 + x + y with x = y = 1, min_count 3: x and y are small.
    // Hiding only them leaves x + y = 2, and x = y = 1 since each is at
    // least 1. Hiding the 3 as well leaves each between 1 and 3: narrower
    // than the protection (3). Hiding the 10 instead protects them: x, y
    // and the 10 add up to 12, each from 1 to 10.
    let mut t = vec![grid(
        "row",
        "p",
        &[],
        &[("c", &["a", "b", "x", "y"])],
        &[(&["a"], 10), (&["b"], 3), (&["x"], 1), (&["y"], 1)],
    )];
    let p = params(3, 3, true);
    let pattern = reader_view(&t);
    let mut leaky = pattern.clone();
    leaky[0].rows[2].1 = None;
    leaky[0].rows[3].1 = None;
    assert!(!audit::audit(&leaky, &audit_params(&p), &[]).passed());
    protect(&mut t, &p);
    assert_eq!(suppressed(&t[0]), ["a", "x", "y"].map(String::from).into());
    assert_eq!(t[0].get(&[TOTAL]).unwrap().flag, Flag::None);
    let a = audit::audit(&reader_view(&t), &audit_params(&p), &[]);
    assert!(a.passed(), "{a:?}");
    assert_eq!((a.cells[1].low, a.cells[1].high), (1, Some(10)));
}

#[test]
fn a_derivable_small_sum_of_two_wide_cells_is_protected() {
    // A = 15 published, B = 5 and C = 3 suppressed (threshold 11), total
    // 23: each of B and C alone ranges over 1..7, but B + C = 8 is known.
    let mut t = vec![grid(
        "abc",
        "p",
        &[],
        &[("c", &["A", "B", "C"])],
        &[(&["A"], 15), (&["B"], 5), (&["C"], 3)],
    )];
    let p = params(11, 1, true);
    let mut leaky = reader_view(&t);
    leaky[0].rows[1].1 = None;
    leaky[0].rows[2].1 = None;
    let a = audit::audit(&leaky, &audit_params(&p), &[]);
    assert_eq!((a.sums[0].low, a.sums[0].high), (8, Some(8)));
    assert!(a.sums[0].failure.is_some(), "the sum 8 fails");
    protect(&mut t, &p);
    assert_eq!(suppressed(&t[0]), ["A", "B", "C"].map(String::from).into());
    assert!(audit::audit(&reader_view(&t), &audit_params(&p), &[]).passed());
}

#[test]
fn three_singletons_in_one_row() {
    let mut t = vec![grid(
        "ones",
        "p",
        &[],
        &[("c", &["a", "b", "c", "d"])],
        &[(&["a"], 1), (&["b"], 1), (&["c"], 1), (&["d"], 40)],
    )];
    let p = params(5, 5, true);
    protect(&mut t, &p);
    assert_eq!(
        suppressed(&t[0]),
        ["a", "b", "c", "d"].map(String::from).into()
    );
    let a = audit::audit(&reader_view(&t), &audit_params(&p), &[]);
    assert!(a.passed(), "{a:?}");
    // a + b + c + d = 43, each at least 1.
    assert!(
        a.cells.iter().all(|c| (c.low, c.high) == (1, Some(40))),
        "{a:?}"
    );
}

#[test]
fn two_tables_sharing_a_margin_are_protected_together() {
    // Identified persons by sex: 2 and 4, both small; alone, the sex table
    // must hide its total 6 too (else each is 1 to 5, too narrow). The
    // funnel's identified cell is that same 6: 103 = 6 + 50 + 47.
    let by_sex = grid(
        "identified_by_sex",
        "persons",
        &[("outcome", "identified")],
        &[("sex", &["female", "male"])],
        &[(&["female"], 2), (&["male"], 4)],
    );
    let funnel = grid(
        "funnel",
        "persons",
        &[],
        &[("outcome", &["identified", "pending", "not_identified"])],
        &[
            (&["identified"], 6),
            (&["pending"], 50),
            (&["not_identified"], 47),
        ],
    );
    let p = params(5, 5, true);
    // Each table protected on its own: the funnel publishes the 6.
    let mut separately = vec![by_sex.clone(), funnel.clone()];
    for t in separately.iter_mut() {
        protect(std::slice::from_mut(t), &p);
    }
    assert!(suppressed(&separately[1]).is_empty());
    let a = audit::audit(&reader_view(&separately[..1]), &audit_params(&p), &[]);
    assert!(a.passed(), "the sex table alone is safe");
    let a = audit::audit(&reader_view(&separately), &audit_params(&p), &[]);
    assert!(!a.passed(), "but not next to the funnel: {a:?}");
    // Together: the funnel hides the 6, and its smallest other outcome.
    let mut both = vec![by_sex, funnel];
    protect(&mut both, &p);
    let a = audit::audit(&reader_view(&both), &audit_params(&p), &[]);
    assert!(a.passed(), "{a:?}");
    assert_eq!(
        suppressed(&both[1]),
        ["identified", "not_identified"].map(String::from).into()
    );
}

#[test]
fn a_cell_published_in_one_table_and_hidden_in_another_is_disclosed() {
    let a_table = grid(
        "a",
        "p",
        &[],
        &[("s", &["x", "y"])],
        &[(&["x"], 3), (&["y"], 30)],
    );
    let mut pub_a = reader_view(std::slice::from_ref(&a_table));
    pub_a[0].rows[0].1 = None;
    pub_a[0].rows[1].1 = None;
    let mut b = pub_a[0].clone();
    b.name = "b".into();
    b.rows[0].1 = Some(3);
    let a = audit::audit(
        &[pub_a[0].clone(), b],
        &audit_params(&params(5, 5, true)),
        &[],
    );
    assert_eq!(a.disclosed.len(), 1, "{a:?}");
    assert!(!a.passed());
}

// ---------------------------------------------------------------------
// Property test: enumerate every table a reader could believe.
// ---------------------------------------------------------------------

/// A published two-way table: inner cells, row and column margins and the
/// grand total, `None` where suppressed.
struct View {
    inner: Vec<Vec<Option<u64>>>,
    rows: Vec<Option<u64>>,
    cols: Vec<Option<u64>>,
    total: Option<u64>,
}

/// Every whole-number table consistent with `v` (each suppressed count
/// at least `lower`, none above `cap`), as the values of all suppressed
/// cells in a fixed order (inner row by row, then row margins, column
/// margins, total). `None` when there are more than `budget`.
fn enumerate(v: &View, lower: u64, cap: u64, budget: usize) -> Option<Vec<Vec<u64>>> {
    let (r, c) = (v.inner.len(), v.inner[0].len());
    let free: Vec<(usize, usize)> = (0..r)
        .flat_map(|i| (0..c).map(move |j| (i, j)))
        .filter(|&(i, j)| v.inner[i][j].is_none())
        .collect();
    let mut grid: Vec<Vec<u64>> = v
        .inner
        .iter()
        .map(|row| row.iter().map(|x| x.unwrap_or(0)).collect())
        .collect();
    let mut out = Vec::new();
    let mut nodes = 0usize;
    #[allow(clippy::too_many_arguments)]
    fn go(
        k: usize,
        free: &[(usize, usize)],
        grid: &mut Vec<Vec<u64>>,
        v: &View,
        lower: u64,
        cap: u64,
        out: &mut Vec<Vec<u64>>,
        nodes: &mut usize,
        budget: usize,
    ) -> bool {
        *nodes += 1;
        if *nodes > budget {
            return false;
        }
        let (r, c) = (grid.len(), grid[0].len());
        let row_sum = |g: &Vec<Vec<u64>>, i: usize| g[i].iter().sum::<u64>();
        let col_sum = |g: &Vec<Vec<u64>>, j: usize| (0..r).map(|i| g[i][j]).sum::<u64>();
        if k == free.len() {
            let rows: Vec<u64> = (0..r).map(|i| row_sum(grid, i)).collect();
            let cols: Vec<u64> = (0..c).map(|j| col_sum(grid, j)).collect();
            let total: u64 = rows.iter().sum();
            let ok = |shown: Option<u64>, x: u64| match shown {
                Some(s) => s == x,
                None => x >= lower,
            };
            if rows.iter().zip(&v.rows).all(|(x, s)| ok(*s, *x))
                && cols.iter().zip(&v.cols).all(|(x, s)| ok(*s, *x))
                && ok(v.total, total)
            {
                let mut vals: Vec<u64> = free.iter().map(|&(i, j)| grid[i][j]).collect();
                vals.extend((0..r).filter(|&i| v.rows[i].is_none()).map(|i| rows[i]));
                vals.extend((0..c).filter(|&j| v.cols[j].is_none()).map(|j| cols[j]));
                if v.total.is_none() {
                    vals.push(total);
                }
                out.push(vals);
            }
            return true;
        }
        let (i, j) = free[k];
        // Room left under published margins.
        let mut hi = cap;
        if let Some(m) = v.rows[i] {
            let used: u64 = row_sum(grid, i) - grid[i][j];
            hi = hi.min(m.saturating_sub(used));
        }
        if let Some(m) = v.cols[j] {
            let used: u64 = col_sum(grid, j) - grid[i][j];
            hi = hi.min(m.saturating_sub(used));
        }
        if let Some(t) = v.total {
            let used: u64 = grid.iter().flatten().sum::<u64>() - grid[i][j];
            hi = hi.min(t.saturating_sub(used));
        }
        for x in lower..=hi.max(lower) {
            if x > hi {
                break;
            }
            grid[i][j] = x;
            if !go(k + 1, free, grid, v, lower, cap, out, nodes, budget) {
                return false;
            }
        }
        grid[i][j] = 0;
        true
    }
    go(
        0, &free, &mut grid, v, lower, cap, &mut out, &mut nodes, budget,
    )
    .then_some(out)
}

#[test]
fn on_random_small_tables_the_audit_matches_every_table_a_reader_could_believe() {
    let mut rng = ChaCha8Rng::seed_from_u64(20261124);
    let (mut checked, mut skipped) = (0, 0);
    for case in 0..160 {
        let r = rng.random_range(1..=3usize);
        let c = rng.random_range(2..=4usize);
        let min_count = rng.random_range(2..=5u64);
        let protection = rng.random_range(1..=min_count);
        let zeros = rng.random_bool(0.8);
        let rows: Vec<String> = (0..r).map(|i| format!("r{i}")).collect();
        let cols: Vec<String> = (0..c).map(|j| format!("c{j}")).collect();
        let mut cells: Vec<(Vec<String>, u64)> = Vec::new();
        let mut truth = vec![vec![0u64; c]; r];
        for (i, row) in truth.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = if rng.random_bool(0.6) {
                    rng.random_range(0..min_count)
                } else {
                    rng.random_range(min_count..min_count + 8)
                };
                cells.push((vec![rows[i].clone(), cols[j].clone()], *x));
            }
        }
        let row_refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let col_refs: Vec<&str> = cols.iter().map(String::as_str).collect();
        let cell_refs: Vec<(Vec<&str>, u64)> = cells
            .iter()
            .map(|(l, x)| (l.iter().map(String::as_str).collect(), *x))
            .collect();
        let cell_refs: Vec<(&[&str], u64)> =
            cell_refs.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
        let mut t = vec![grid(
            "t",
            "p",
            &[],
            &[("r", &row_refs), ("c", &col_refs)],
            &cell_refs,
        )];
        let p = params(min_count, protection, zeros);
        if std::env::var_os("DUMP").is_some() {
            eprintln!(
                "case {case} {min_count} {protection} {zeros}\n{}",
                table_csv(&t[0])
            );
        }
        protect(&mut t, &p);
        let a = audit::audit(&reader_view(&t), &audit_params(&p), &[]);
        assert!(
            a.passed(),
            "case {case}: the suppressor's output fails: {a:?}"
        );
        // The view a reader has.
        let shown = |labels: [&str; 2]| {
            let row = t[0].get(&labels).unwrap();
            (row.flag == Flag::None).then_some(row.count)
        };
        let view = View {
            inner: (0..r)
                .map(|i| (0..c).map(|j| shown([&rows[i], &cols[j]])).collect())
                .collect(),
            rows: (0..r).map(|i| shown([&rows[i], TOTAL])).collect(),
            cols: (0..c).map(|j| shown([TOTAL, &cols[j]])).collect(),
            total: shown([TOTAL, TOTAL]),
        };
        let true_total: u64 = truth.iter().flatten().sum();
        let cap = true_total + min_count + protection + 2;
        let lower = u64::from(zeros);
        let Some(tables) = enumerate(&view, lower, cap, 300_000) else {
            skipped += 1;
            continue;
        };
        checked += 1;
        // The suppressed cells in enumeration order, with their labels.
        let mut order: Vec<String> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            for (j, col) in cols.iter().enumerate() {
                if view.inner[i][j].is_none() {
                    order.push(format!("{row}/{col}"));
                }
            }
        }
        order.extend(
            (0..r)
                .filter(|&i| view.rows[i].is_none())
                .map(|i| format!("{}/{TOTAL}", rows[i])),
        );
        order.extend(
            (0..c)
                .filter(|&j| view.cols[j].is_none())
                .map(|j| format!("{TOTAL}/{}", cols[j])),
        );
        if view.total.is_none() {
            order.push(format!("{TOTAL}/{TOTAL}"));
        }
        assert!(!tables.is_empty(), "case {case}: the truth is a solution");

        for (k, name) in order.iter().enumerate() {
            let lo = tables.iter().map(|v| v[k]).min().unwrap();
            let hi = tables.iter().map(|v| v[k]).max().unwrap();
            let f = a
                .cells
                .iter()
                .find(|f| f.labels.join("/") == *name)
                .unwrap_or_else(|| panic!("case {case}: {name} audited"));
            assert_eq!(f.low, lo, "case {case}: {name} lowest");
            match f.high {
                Some(h) => assert_eq!(h, hi, "case {case}: {name} highest"),
                // Inner cells stop at the cap; a margin of several at a
                // multiple of it.
                None => assert!(hi >= cap, "case {case}: {name} unbounded, but {hi}"),
            }
            assert!(hi >= min_count, "case {case}: {name} reaches {hi} only");
            assert!(hi - lo >= protection, "case {case}: {name} {lo}..{hi}");
        }
        // No sum of suppressed cells is fixed and small: search the sets
        // whose true sum is small.
        let truth_vals: Vec<u64> = tables
            .iter()
            .find(|v| {
                order.iter().zip(v.iter()).all(|(name, x)| {
                    let row = t[0]
                        .rows
                        .iter()
                        .find(|r| r.labels.join("/") == *name)
                        .unwrap();
                    row.count == *x
                })
            })
            .expect("the truth is among them")
            .clone();
        let mut stack: Vec<(usize, Vec<usize>, u64)> = vec![(0, Vec::new(), 0)];
        while let Some((next, set, sum)) = stack.pop() {
            if set.len() >= 2 && sum >= 1 && sum < min_count {
                let fixed = tables
                    .iter()
                    .all(|v| set.iter().map(|&k| v[k]).sum::<u64>() == sum);
                assert!(
                    !fixed,
                    "case {case}: the sum of {:?} is always {sum}",
                    set.iter().map(|&k| &order[k]).collect::<Vec<_>>()
                );
            }
            for (k, x) in truth_vals.iter().enumerate().skip(next) {
                let s = sum + x;
                if s < min_count && set.len() < 6 {
                    let mut more = set.clone();
                    more.push(k);
                    stack.push((k + 1, more, s));
                }
            }
        }
    }
    assert!(checked >= 120, "checked {checked}, skipped {skipped}");
}

// ---------------------------------------------------------------------
// Metamorphic tests.
// ---------------------------------------------------------------------

fn random_table(rng: &mut ChaCha8Rng, rows: &[String], cols: &[String]) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    for r in rows {
        for c in cols {
            let x = if rng.random_bool(0.4) {
                rng.random_range(0..5)
            } else {
                rng.random_range(5..40)
            };
            out.push((vec![r.clone(), c.clone()], x));
        }
    }
    out
}

fn table_of(rows: &[String], cols: &[String], cells: &[(Vec<String>, u64)]) -> Table {
    let r: Vec<&str> = rows.iter().map(String::as_str).collect();
    let c: Vec<&str> = cols.iter().map(String::as_str).collect();
    let refs: Vec<(Vec<&str>, u64)> = cells
        .iter()
        .map(|(l, x)| (l.iter().map(String::as_str).collect(), *x))
        .collect();
    let refs: Vec<(&[&str], u64)> = refs.iter().map(|(l, x)| (l.as_slice(), *x)).collect();
    grid("m", "p", &[], &[("r", &r), ("c", &c)], &refs)
}

#[test]
fn reordering_categories_and_rows_changes_nothing_and_output_is_byte_identical() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20 {
        let rows: Vec<String> = (0..rng.random_range(2..6))
            .map(|i| format!("r{i}"))
            .collect();
        let cols: Vec<String> = (0..rng.random_range(2..6))
            .map(|j| format!("c{j}"))
            .collect();
        let cells = random_table(&mut rng, &rows, &cols);
        let p = params(5, 5, true);
        let mut a = vec![table_of(&rows, &cols, &cells)];
        protect(&mut a, &p);
        // Categories in another order, cells listed in another order.
        let mut rows2 = rows.clone();
        rows2.reverse();
        let mut cols2 = cols.clone();
        cols2.rotate_left(1);
        let mut cells2 = cells.clone();
        cells2.reverse();
        let mut b = vec![table_of(&rows2, &cols2, &cells2)];
        protect(&mut b, &p);
        assert_eq!(suppressed(&a[0]), suppressed(&b[0]));
        assert!(audit::audit(&reader_view(&b), &audit_params(&p), &[]).passed());
        // The same input twice: the same bytes.
        let mut again = vec![table_of(&rows, &cols, &cells)];
        protect(&mut again, &p);
        assert_eq!(table_csv(&a[0]), table_csv(&again[0]));
    }
}

#[test]
fn raising_the_threshold_never_reduces_the_primary_cells() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..20 {
        let rows: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
        let cols: Vec<String> = (0..4).map(|j| format!("c{j}")).collect();
        let cells = random_table(&mut rng, &rows, &cols);
        let mut before: Option<BTreeSet<String>> = None;
        for min_count in 2..12 {
            let mut t = vec![table_of(&rows, &cols, &cells)];
            let p = params(min_count, min_count, true);
            protect(&mut t, &p);
            let primary: BTreeSet<String> = t[0]
                .rows
                .iter()
                .filter(|r| r.flag == Flag::Primary)
                .map(|r| r.labels.join("/"))
                .collect();
            if let Some(b) = &before {
                assert!(
                    b.is_subset(&primary),
                    "{min_count}: {b:?} not in {primary:?}"
                );
            }
            assert!(audit::audit(&reader_view(&t), &audit_params(&p), &[]).passed());
            before = Some(primary);
        }
    }
}
