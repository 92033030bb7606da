//! Disclosure control at scale: secondary suppression and the audit of a
//! report whose tables hold about 100,000 cells.
//!
//! The report (`SHAPE=3d`, the default): for each of 118 regions, persons
//! screened by nationality x month x outcome (12 x 12 x 4; with margins
//! 13 x 13 x 5 = 845 cells, its two-way and one-way margins being the
//! tables by nationality and month, by nationality and outcome, and so
//! on): 99,710 cells. `SHAPE=5d`: one five-way table per region (sex x age
//! band x nationality x sector x outcome, 4 x 6 x 9 x 7 x 5 = 7,560 cells
//! with margins), 13 regions (98,280 cells). Regions differ in size and
//! every attribute is skewed, as real case loads are, so a large share of
//! cells is small or zero.
//!
//! ```sh
//! cargo bench --bench disclosure              # RUNS=3 by default
//! REGIONS=4 RUNS=1 SHAPE=5d cargo bench --bench disclosure
//! ```

use std::collections::HashMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetally::audit;
use safetally::report::disclosure::{Thresholds, primary, reader_view};
use safetally::report::secondary::{Params, secondary};
use safetally::report::tables::{Flag, QuerySpec, TOTAL, Table, complete};

const DIMS_5D: &[(&str, usize)] = &[
    ("sex", 3),
    ("age_band", 5),
    ("nationality", 8),
    ("sector", 6),
    ("outcome", 4),
];
const DIMS_3D: &[(&str, usize)] = &[("nationality", 12), ("month", 12), ("outcome", 4)];

/// Draws an index with probability proportional to 1 / (1 + i)^1.3.
fn skewed(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let w: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + i as f64).powf(1.3)).collect();
    let mut x = rng.random::<f64>() * w.iter().sum::<f64>();
    for (i, wi) in w.iter().enumerate() {
        if x < *wi {
            return i;
        }
        x -= wi;
    }
    n - 1
}

fn region_table(
    rng: &mut ChaCha8Rng,
    dims: &[(&str, usize)],
    region: usize,
    persons: usize,
) -> Table {
    let names: Vec<&str> = dims.iter().map(|(d, _)| *d).collect();
    let code = format!("R{region:02}");
    let spec = QuerySpec::synthetic(
        &format!("region_{region:02}"),
        "persons screened",
        &[("region", code.as_str())],
        &names,
    );
    let values: Vec<Vec<String>> = dims
        .iter()
        .map(|(d, n)| {
            (0..*n)
                .map(|i| format!("{d}{i}"))
                .chain([TOTAL.to_string()])
                .collect()
        })
        .collect();
    let mut base: HashMap<Vec<String>, u64> = HashMap::new();
    for _ in 0..persons {
        let labels: Vec<String> = dims
            .iter()
            .zip(&values)
            .map(|((_, n), v)| v[skewed(rng, *n)].clone())
            .collect();
        *base.entry(labels).or_default() += 1;
    }
    complete(spec, &values, &base)
}

fn main() {
    let five = std::env::var("SHAPE").is_ok_and(|s| s == "5d");
    let (dims, default_regions) = if five { (DIMS_5D, 13) } else { (DIMS_3D, 118) };
    let regions: usize = std::env::var("REGIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_regions);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let tables: Vec<Table> = (0..regions)
        .map(|r| {
            let persons = if five {
                (20_000.0 / (1.0 + r as f64 * 0.35).powi(2)) as usize + 400
            } else {
                (8_000.0 / (1.0 + r as f64 * 0.05)) as usize + 200
            };
            region_table(&mut rng, dims, r, persons)
        })
        .collect();
    let cells: usize = tables.iter().map(|t| t.rows.len()).sum();
    let p = Params {
        min_count: 5,
        protection: 5,
        zeros_published: true,
        earlier: Vec::new(),
    };
    let thresholds = Thresholds {
        min_count: 5,
        min_denominator: 20,
        publish_zeros: true,
    };
    let mut sup_times = Vec::new();
    let mut audit_times = Vec::new();
    let mut summary = (0, 0, 0, true);
    let mut lp = (0, 0);
    for _ in 0..runs {
        let mut t = tables.clone();
        let start = Instant::now();
        let before = safetally::interval::solves();
        primary(&mut t, &thresholds);
        let added = secondary(&mut t, &p).expect("protectable");
        sup_times.push(start.elapsed().as_secs_f64());
        let sup_solves = safetally::interval::solves() - before;
        let view = reader_view(&t);
        let start = Instant::now();
        let a = audit::audit(
            &view,
            &audit::Params {
                min_count: 5,
                protection: 5,
                zeros_published: true,
                rounding: None,
                exact: false,
            },
            &[],
        );
        audit_times.push(start.elapsed().as_secs_f64());
        lp = (
            sup_solves,
            safetally::interval::solves() - before - sup_solves,
        );
        let primary_cells = t
            .iter()
            .flat_map(|t| &t.rows)
            .filter(|r| r.flag == Flag::Primary)
            .count();
        summary = (primary_cells, added, a.cells.len(), a.passed());
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let (s_min, s_med) = stats(&mut sup_times);
    let (a_min, a_med) = stats(&mut audit_times);
    println!("shape: {}", if five { "5d" } else { "3d" });
    println!("linear programs: suppression {}, audit {}", lp.0, lp.1);
    println!(
        "| tables | cells | primary | secondary | suppress s (min) | suppress s (median) | audit s (min) | audit s (median) | total s (min) | audit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {regions} | {cells} | {} | {} | {s_min:.2} | {s_med:.2} | {a_min:.2} | {a_med:.2} | {:.2} | {} ({} suppressed cells) |",
        summary.0,
        summary.1,
        s_min + a_min,
        if summary.3 { "PASS" } else { "FAIL" },
        summary.2,
    );
}
