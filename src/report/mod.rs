//! The report: the store's drops of a window, linked into persons, counted
//! by the SQL files of `queries/`, with small counts suppressed, written as
//! tables, a summary, a Markdown report and a manifest.
//!
//! DataFusion scans the drops as Parquet (streamed; nothing is copied
//! first), the records are linked into persons ([`link`]), and the persons
//! are registered as the views `screening_persons` and
//! `self_assessment_persons` next to `screening_records` and
//! `self_assessment_records`.

pub mod chart;
pub mod disclosure;
pub mod fuzzy;
pub mod grouping;
pub mod html;
pub mod input;
pub mod link;
pub mod output;
pub mod secondary;
pub mod tables;
pub mod trace;

use std::path::{Path, PathBuf};

use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::pseudonymise::Period;
use crate::schema::Form;
use crate::store::{Store, recover, release};
use disclosure::Thresholds;
pub use input::{InputDrop, LinkStats};
use tables::{QuerySpec, Table};

pub use crate::config::Config;

impl Config {
    /// The settings of fuzzy linkage.
    pub fn fuzzy_params(&self) -> fuzzy::Params {
        fuzzy::Params {
            filter_budget: usize::try_from(self.fuzzy_memory_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            ..fuzzy::Params::default()
        }
    }

    /// The thresholds part.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            min_count: self.min_count,
            min_denominator: self.min_denominator,
            publish_zeros: self.publish_zeros,
        }
    }

    /// What secondary suppression protects against, given the cells of
    /// earlier releases.
    pub fn protection(&self, earlier: Vec<secondary::Earlier>) -> secondary::Params {
        secondary::Params {
            min_count: self.min_count,
            protection: self.protection.unwrap_or(self.min_count),
            zeros_published: self.publish_zeros,
            earlier,
        }
    }
}

/// Everything a report is made of, before it is written.
#[derive(Debug)]
pub struct Report {
    /// The settings used.
    pub config: Config,
    /// The window.
    pub from: Period,
    /// The window's last month.
    pub to: Period,
    /// The drops read.
    pub inputs: Vec<InputDrop>,
    /// The key fingerprint of the drops.
    pub fingerprint: Option<String>,
    /// What linking found, per form.
    pub linkage: Vec<(Form, LinkStats)>,
    /// The completed, suppressed tables in report order.
    pub tables: Vec<Table>,
    /// The store's ledger: entries and the SHA-256 of its last line.
    pub ledger: (usize, String),
    /// Earlier releases over nested windows that suppression took into
    /// account.
    pub earlier: Vec<String>,
    /// The ledger entry of the release of the same window this one revises.
    pub revises: Option<u64>,
}

impl Report {
    /// The tables as a reader sees them, for the release ledger.
    pub fn release(&self) -> release::Release {
        release::Release {
            from: self.from.to_string(),
            to: self.to.to_string(),
            title: self.config.title.clone(),
            tables: self
                .tables
                .iter()
                .map(|t| release::ReleasedTable {
                    name: t.spec.name.clone(),
                    population: t.spec.population.clone(),
                    where_: t.spec.where_.clone(),
                    dimensions: t.spec.dimensions.clone(),
                    cells: t.shown(),
                })
                .collect(),
        }
    }
}

/// Publishes a report: writes the folder beside `out`, audits what was
/// written as a reader would (with the earlier releases the store
/// records), records the release in the store, then puts the folder in
/// place. A report that fails its audit is not written and not recorded.
pub fn publish(store: &Store, report: &Report, out: &Path, replace: bool) -> Result<PathBuf> {
    output::write(report, out, replace, &mut |dir: &Path| {
        let (published, params) = crate::audit::read_report(dir)?;
        let state = store.state()?;
        let earlier = crate::audit::earlier_cells(&state, store, report.from, report.to)?;
        let a = crate::audit::audit(&published, &params, &earlier);
        if !a.passed() {
            let first = a
                .failures()
                .into_iter()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n  ");
            return Err(Error::Refused(format!(
                "the report fails its disclosure audit, so it was not written:\n  {first}\n\
                 This is a fault in safetally's suppression: please report it."
            )));
        }
        release::record(store, &report.release(), report.ledger.0)?;
        Ok(())
    })
}

/// Every month from `from` to `to`.
pub fn months(from: Period, to: Period) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = from;
    while p <= to {
        out.push(p.to_string());
        p = p.next();
    }
    out
}

/// Builds the report of a window.
pub fn build(store: &Store, from: Period, to: Period, config: Config) -> Result<Report> {
    if from > to {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    // Read what the ledger says under the lock (after repairing any
    // interrupted ingest); the filed drops never change afterwards.
    let state = {
        let _lock = store.lock("report", true)?;
        for done in recover(store)? {
            eprintln!("recovered: {done}");
        }
        store.state()?
    };
    if let Some(p) = state.ledger.problems.first() {
        return Err(Error::Refused(format!(
            "the store's ledger is damaged ({p}): run `safetally store verify {}`",
            store.root().display()
        )));
    }
    let (inputs, fingerprint) = input::select(&state, from, to)?;
    let specs = tables::load_queries(config.queries.as_deref())?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .build()
        .map_err(|e| Error::io("cannot start the query engine", e))?;
    let t = std::time::Instant::now();
    let (linkage, mut tables) = runtime.block_on(run(store, &inputs, &specs, from, to, &config))?;
    input::trace("read, link and count", t);
    let t0 = std::time::Instant::now();
    let t = config.thresholds();
    disclosure::primary(&mut tables, &t);
    let nested = release::nested_releases(&state, store, from, to)?;
    let mut earlier = Vec::new();
    for (rec, rel) in &nested {
        for t in &rel.tables {
            for (labels, value) in &t.cells {
                if let Some(v) = value {
                    earlier.push(secondary::Earlier {
                        release: rec.label(),
                        key: secondary::cell_key(&t.population, &t.where_, &t.dimensions, labels),
                        value: *v,
                    });
                }
            }
        }
    }
    secondary::secondary(&mut tables, &config.protection(earlier))?;
    if let Some(base) = config.rounding_base {
        disclosure::round(&mut tables, base);
    }
    disclosure::percentages(&mut tables, &t);
    input::trace("suppression", t0);
    Ok(Report {
        config,
        from,
        to,
        inputs,
        fingerprint,
        linkage,
        tables,
        ledger: (state.ledger.entries.len(), state.ledger.last_hash.clone()),
        earlier: nested.iter().map(|(r, _)| r.label()).collect(),
        revises: nested
            .iter()
            .rev()
            .find(|(r, _)| r.bounds() == Some((from, to)))
            .map(|(r, _)| r.seq),
    })
}

/// One form's linkage over a window, as `safetally link` reports it.
#[derive(Debug)]
pub struct FormLinkage {
    /// The form.
    pub form: Form,
    /// The form's drops in the window, in the order they were read.
    pub drops: Vec<InputDrop>,
    /// Records per person.
    pub records_per_person: Vec<u32>,
    /// What linking found.
    pub stats: LinkStats,
    /// How each record was linked.
    pub trace: input::Trace,
}

/// A session context as the report's.
fn session() -> SessionContext {
    let config = SessionConfig::new()
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true);
    let ctx = SessionContext::new_with_config(config);
    ctx.add_optimizer_rule(std::sync::Arc::new(grouping::GroupByCodes));
    ctx
}

/// Links the store's current drops of a window into persons, form by form,
/// as `report` does (fuzzy links when `fuzzy_linkage`, with `params`), and
/// says how each record was linked. Reads no key and writes nothing.
pub fn link_window(
    store: &Store,
    from: Period,
    to: Period,
    fuzzy_linkage: bool,
    params: &fuzzy::Params,
) -> Result<Vec<FormLinkage>> {
    if from > to {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    let state = store.state()?;
    if let Some(p) = state.ledger.problems.first() {
        return Err(Error::Refused(format!(
            "the store's ledger is damaged ({p}): run `safetally store verify {}`",
            store.root().display()
        )));
    }
    let (inputs, _) = input::select(&state, from, to)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .build()
        .map_err(|e| Error::io("cannot start the query engine", e))?;
    runtime.block_on(async {
        let mut out = Vec::new();
        for form in Form::ALL {
            let drops: Vec<&InputDrop> = inputs.iter().filter(|d| d.form == form.code()).collect();
            let (persons, stats, trace) =
                input::link_form(store, &drops, form, fuzzy_linkage, params, true).await?;
            out.push(FormLinkage {
                form,
                drops: drops.into_iter().cloned().collect(),
                records_per_person: persons.records,
                stats,
                trace: trace.expect("traced"),
            });
        }
        Ok(out)
    })
}

async fn run(
    store: &Store,
    inputs: &[InputDrop],
    specs: &[QuerySpec],
    from: Period,
    to: Period,
    config: &Config,
) -> Result<(Vec<(Form, LinkStats)>, Vec<Table>)> {
    let ctx = session();
    let (fuzzy, params) = (config.fuzzy_linkage, config.fuzzy_params());
    let mut linkage = Vec::new();
    for form in Form::ALL {
        // A form's records view is planned only for the queries that read
        // it (the union of every drop takes a while to plan).
        let view = format!("{}_records", form.code());
        let with_records = specs
            .iter()
            .any(|s| s.sql.to_ascii_lowercase().contains(&view));
        linkage.push((
            form,
            input::register_form(&ctx, store, inputs, form, fuzzy, &params, with_records).await?,
        ));
    }
    let months = months(from, to);
    let t = std::time::Instant::now();
    // The queries run at once: each is small beside the engine's fixed
    // costs (planning, the last merge of an aggregate), which overlap.
    let out = futures::future::try_join_all(
        specs
            .iter()
            .map(|spec| tables::run_query(&ctx, spec, &months)),
    )
    .await?;
    input::trace("the queries", t);
    Ok((linkage, out))
}
