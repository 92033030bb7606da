//! Disclosure control on the completed tables.
//!
//! Primary suppression: a count from 1 to `min_count - 1` is not published
//! (nor a zero, when zeros are configured as unpublishable). Percentages
//! are shown only when their numerator and denominator are published and
//! the denominator is at least `min_denominator`. Secondary suppression
//! (so that no suppressed cell can be worked out from margins, other
//! tables and earlier reports, [`super::secondary`]) runs between
//! [`primary`] and [`percentages`], then the optional [`round`]ing.

use std::collections::HashMap;

use super::tables::{Flag, TOTAL, Table};

/// The thresholds in use.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Thresholds {
    /// Smallest count published (other than zero).
    pub min_count: u64,
    /// Smallest denominator of a published percentage.
    pub min_denominator: u64,
    /// Whether zero counts are published.
    pub publish_zeros: bool,
}

/// Flags every small count as primary.
pub fn primary(tables: &mut [Table], t: &Thresholds) {
    for table in tables {
        for row in &mut table.rows {
            let small = row.count > 0 && row.count < t.min_count;
            let zero = row.count == 0 && !t.publish_zeros;
            if small || zero {
                row.flag = Flag::Primary;
            }
        }
    }
}

/// Rounds every published count to the nearest multiple of `base`
/// (halves up). Suppressed cells keep their count, which is never shown.
pub fn round(tables: &mut [Table], base: u64) {
    for row in tables.iter_mut().flat_map(|t| &mut t.rows) {
        if row.flag == Flag::None {
            row.count = (row.count + base / 2) / base * base;
        }
    }
}

/// Fills in the percentages that may be shown.
pub fn percentages(tables: &mut [Table], t: &Thresholds) {
    for table in tables {
        let Some(dim) = &table.spec.percent_of else {
            continue;
        };
        let d = table
            .spec
            .dimensions
            .iter()
            .position(|x| x == dim)
            .expect("percent names a dimension");
        let denominators: HashMap<Vec<String>, (u64, Flag)> = table
            .rows
            .iter()
            .filter(|r| r.labels[d] == TOTAL)
            .map(|r| (r.labels.clone(), (r.count, r.flag)))
            .collect();
        for row in &mut table.rows {
            let mut key = row.labels.clone();
            key[d] = TOTAL.to_string();
            let Some(&(den, den_flag)) = denominators.get(&key) else {
                continue;
            };
            if row.flag == Flag::None && den_flag == Flag::None && den >= t.min_denominator.max(1) {
                row.percent = Some(round1(100.0 * row.count as f64 / den as f64));
            }
        }
    }
}

/// Rounds to one decimal, halves away from zero (on the exact ratio, not
/// on a binary approximation of it: 0.05 rounds up).
pub fn round1(x: f64) -> f64 {
    (x * 10.0 + 1e-9).round() / 10.0
}

/// The tables as a reader sees them, in the audit's terms (without
/// percentages), for auditing tables that were never written out.
pub fn reader_view(tables: &[Table]) -> Vec<crate::audit::Published> {
    tables
        .iter()
        .map(|t| crate::audit::Published {
            name: t.spec.name.clone(),
            population: t.spec.population.clone(),
            where_: t.spec.where_.clone(),
            dimensions: t.spec.dimensions.clone(),
            rows: t.shown(),
            percent_of: None,
            percents: Vec::new(),
        })
        .collect()
}

/// Suppression statistics for the manifest.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Cells in all tables.
    pub cells: usize,
    /// Cells suppressed as small counts.
    pub primary: usize,
    /// Cells suppressed to protect them.
    pub secondary: usize,
    /// Percentages shown.
    pub percentages: usize,
}

/// Counts cells by flag.
pub fn stats(tables: &[Table]) -> Stats {
    let mut s = Stats::default();
    for row in tables.iter().flat_map(|t| &t.rows) {
        s.cells += 1;
        match row.flag {
            Flag::Primary => s.primary += 1,
            Flag::Secondary => s.secondary += 1,
            Flag::None => {}
        }
        if row.percent.is_some() {
            s.percentages += 1;
        }
    }
    s
}
