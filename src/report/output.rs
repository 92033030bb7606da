//! Writing a report: `tables/NAME.csv`, `summary.json`, `report.md`,
//! `report.html` and `manifest.json`, into a new folder that appears whole
//! (built beside it, then renamed).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Report;
use super::disclosure;
use super::tables::{Flag, Row, TOTAL, Table, UNKNOWN};
use crate::drop::{FORMAT_VERSION, created_now, sync_dir};
use crate::error::{Error, Result};
use crate::pseudonymise::country::by_alpha3;
use crate::pseudonymise::matchkeys::{NAME_DOB_RULE, PASSPORT_RULE, RECORD_RULE};
use crate::pseudonymise::normalise::NORMALISER_VERSION;
use crate::schema::Form;

/// `1037` as `1,037`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `85.5%`.
pub fn pct(p: f64) -> String {
    format!("{p:.1}%")
}

/// How a suppressed cell reads. The same mark for small counts and for
/// the cells that protect them: a mark that told them apart would tell a
/// reader which cells are small.
pub const SUPPRESSED: &str = "x";

/// How a cell reads: the count, or [`SUPPRESSED`].
pub fn cell_text(row: &Row) -> String {
    match row.flag {
        Flag::None => thousands(row.count),
        _ => SUPPRESSED.to_string(),
    }
}

fn find<'a>(report: &'a Report, name: &str) -> Option<&'a Table> {
    report.tables.iter().find(|t| t.spec.name == name)
}

fn published(row: Option<&Row>) -> Option<u64> {
    row.filter(|r| r.flag == Flag::None).map(|r| r.count)
}

fn stats(report: &Report, form: Form) -> &super::input::LinkStats {
    &report
        .linkage
        .iter()
        .find(|(f, _)| *f == form)
        .expect("every form is linked")
        .1
}

/// The summary: headline figures, each `null` when not publishable.
pub fn summary(report: &Report) -> Value {
    let min = report.config.min_count;
    let publishable = |n: u64| (n == 0 || n >= min).then_some(n);
    let funnel = find(report, "screening_funnel");
    let persons = funnel.and_then(|t| published(t.get(&[TOTAL])));
    let identified_row = funnel.and_then(|t| t.get(&["identified"]));
    let screening = stats(report, Form::Screening);
    let sa = stats(report, Form::SelfAssessment);
    let fear = find(report, "self_assessment_fear_of_consequences");
    let mut fear_pct = serde_json::Map::new();
    if let Some(t) = fear {
        for r in &t.rows {
            if r.labels[1] == "yes"
                && r.labels[0] != TOTAL
                && r.labels[0] != UNKNOWN
                && let Some(p) = r.percent
            {
                fear_pct.insert(r.labels[0].clone(), json!(p));
            }
        }
    }
    let respondents = fear.and_then(|t| published(t.get(&[TOTAL, TOTAL])));
    json!({
        "window": { "from": report.from.to_string(), "to": report.to.to_string() },
        "min_count": min,
        "screening": {
            "persons": persons,
            "identified": published(identified_row),
            "identified_pct": identified_row.and_then(|r| r.percent),
            "records": publishable(screening.records),
            "organisations": screening.organisations,
        },
        "self_assessment": {
            "respondents": respondents,
            "records": publishable(sa.records),
            "organisations": sa.organisations,
            "fear_of_consequences_pct": fear_pct,
        },
    })
}

/// The headline sentences.
pub fn headlines(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = find(report, "screening_funnel")
        && let Some(total) = t.get(&[TOTAL])
    {
        let identified = t.get(&["identified"]);
        let ident = match identified {
            Some(r) if r.flag == Flag::None => Some(match r.percent {
                Some(p) => format!("{} ({})", thousands(r.count), pct(p)),
                None => thousands(r.count),
            }),
            _ => None,
        };
        let were = if identified.is_some_and(|r| r.flag == Flag::None && r.count == 1) {
            "was"
        } else {
            "were"
        };
        out.push(match (total.flag, ident) {
            (Flag::None, Some(ident)) => format!(
                "Of the {} potential victims who underwent preliminary screening, {ident} \
                 {were} identified as victims of trafficking.",
                thousands(total.count)
            ),
            (Flag::None, None) => format!(
                "Of the {} potential victims who underwent preliminary screening, the number \
                 identified as victims of trafficking is withheld to protect small groups.",
                thousands(total.count)
            ),
            _ => "The number of potential victims who underwent preliminary screening is \
                  withheld to protect small groups."
                .to_string(),
        });
    }
    if let Some(t) = find(report, "self_assessment_fear_of_consequences") {
        let parts: Vec<String> = t
            .rows
            .iter()
            .filter(|r| r.labels[1] == "yes" && r.labels[0] != TOTAL && r.labels[0] != UNKNOWN)
            .filter_map(|r| {
                let p = r.percent?;
                let who = by_alpha3(&r.labels[0])
                    .and_then(|c| c.demonyms.first().copied())
                    .unwrap_or(r.labels[0].as_str());
                Some(format!("{} of {who}", pct(p)))
            })
            .collect();
        if !parts.is_empty() {
            let list = match parts.len() {
                1 => parts[0].clone(),
                n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
            };
            out.push(format!(
                "{list} respondents feared negative consequences if they left their employment."
            ));
        }
    }
    out
}

/// A table as tidy CSV: dimensions, `count` (empty when suppressed),
/// `flag`, then `percent` when the table has percentages.
pub fn table_csv(t: &Table) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let mut header: Vec<&str> = t.spec.dimensions.iter().map(String::as_str).collect();
    header.extend(["count", "flag"]);
    if t.spec.percent_of.is_some() {
        header.push("percent");
    }
    w.write_record(&header).expect("in memory");
    for r in &t.rows {
        let mut rec: Vec<String> = r.labels.clone();
        rec.push(if r.flag == Flag::None {
            r.count.to_string()
        } else {
            String::new()
        });
        rec.push(r.flag.as_str().to_string());
        if t.spec.percent_of.is_some() {
            rec.push(r.percent.map(|p| format!("{p:.1}")).unwrap_or_default());
        }
        w.write_record(&rec).expect("in memory");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8")
}

fn month_name(p: &str) -> String {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    match p.parse::<crate::pseudonymise::Period>() {
        Ok(p) => format!("{} {}", NAMES[p.month as usize - 1], p.year),
        Err(_) => p.to_string(),
    }
}

/// How a dimension value reads in the report.
pub fn label(dim: &str, value: &str) -> String {
    if value == TOTAL {
        return TOTAL.to_string();
    }
    if value == UNKNOWN {
        return "Unknown".to_string();
    }
    if dim == "nationality"
        && let Some(c) = by_alpha3(value)
    {
        return c.name.to_string();
    }
    if dim.ends_with("month") {
        return month_name(value);
    }
    let s = value.replace('_', " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

fn md_table(t: &Table) -> String {
    let mut s = String::new();
    let dims = &t.spec.dimensions;
    let has_pct = t.spec.percent_of.is_some();
    let head: Vec<String> = dims.iter().map(|d| label("", d)).collect();
    let _ = write!(s, "| {} | Persons |", head.join(" | "));
    if has_pct {
        s.push_str(" % |");
    }
    s.push('\n');
    let _ = write!(s, "|{}---:|", "---|".repeat(dims.len()));
    if has_pct {
        s.push_str("---:|");
    }
    s.push('\n');
    for r in &t.rows {
        let labels: Vec<String> = dims
            .iter()
            .zip(&r.labels)
            .map(|(d, v)| {
                let l = label(d, v);
                if r.is_margin() { format!("**{l}**") } else { l }
            })
            .collect();
        let _ = write!(s, "| {} | {} |", labels.join(" | "), cell_text(r));
        if has_pct {
            let _ = write!(s, " {} |", r.percent.map(pct).unwrap_or_default());
        }
        s.push('\n');
    }
    s
}

/// The report as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", report.config.title);
    let orgs: std::collections::BTreeSet<&str> =
        report.inputs.iter().map(|d| d.org.as_str()).collect();
    let _ = writeln!(
        s,
        "{} to {}. From {} monthly drops of {} member organisations.\n",
        month_name(&report.from.to_string()),
        month_name(&report.to.to_string()),
        thousands(report.inputs.len() as u64),
        orgs.len()
    );
    let heads = headlines(report);
    if !heads.is_empty() {
        s.push_str("## Headlines\n\n");
        for h in heads {
            let _ = writeln!(s, "- {h}");
        }
        s.push('\n');
    }
    s.push_str("## Tables\n\n");
    for t in &report.tables {
        let _ = writeln!(s, "### {}\n", t.spec.title);
        let _ = writeln!(s, "Counts {}.\n", t.spec.counts);
        s.push_str(&md_table(t));
        s.push('\n');
    }
    s.push_str("## About these figures\n\n");
    let _ = writeln!(
        s,
        "- Every figure counts distinct persons, not records: records of one person from \
         several NGOs and months are linked by keyed match keys (passport; name and date of \
         birth). Anonymous self-assessments count once each."
    );
    let _ = writeln!(s, "- {}", suppression_note(report));
    let _ = writeln!(
        s,
        "- `manifest.json` lists every drop these figures come from, with its SHA-256, and \
         the store's ledger position."
    );
    s
}

/// What the suppression mark means, for readers.
pub fn suppression_note(report: &Report) -> String {
    let min = report.config.min_count;
    let mut note = format!(
        "\"{SUPPRESSED}\" marks a count that is not published: a count from 1 to {}, or a \
         count that would let such a count be worked out from the others (from this report's \
         totals, its other tables, or earlier reports). No reader can narrow a withheld count \
         down to fewer than {} possible values or rule out that it is {min} or more. \
         Percentages are shown only when their count is published and their total is at \
         least {}.",
        min - 1,
        report.config.protection.unwrap_or(min) + 1,
        report.config.min_denominator,
    );
    if let Some(b) = report.config.rounding_base {
        note.push_str(&format!(
            " Counts are rounded to a multiple of {b}; totals are rounded on their own, so \
             they need not equal the sum of their parts."
        ));
    }
    note
}

/// The manifest: inputs, parameters, versions, linkage and suppression.
pub fn manifest(report: &Report) -> Value {
    let per_table: Vec<Value> = report
        .tables
        .iter()
        .map(|t| {
            let s = disclosure::stats(std::slice::from_ref(t));
            json!({ "table": t.spec.name, "cells": s.cells,
                    "suppressed": s.primary + s.secondary, "percentages": s.percentages })
        })
        .collect();
    let all = disclosure::stats(&report.tables);
    let linkage: serde_json::Map<String, Value> = report
        .linkage
        .iter()
        .map(|(f, s)| (f.code().to_string(), json!(s)))
        .collect();
    let rules: Vec<String> = [PASSPORT_RULE, NAME_DOB_RULE, RECORD_RULE]
        .iter()
        .map(|(n, v)| format!("{n}/{v}"))
        .collect();
    json!({
        "tool": { "name": "safetally", "version": env!("CARGO_PKG_VERSION") },
        "engine": "Apache DataFusion 55",
        "generated": created_now(),
        "window": { "from": report.from.to_string(), "to": report.to.to_string() },
        "parameters": {
            "title": report.config.title,
            "min_count": report.config.min_count,
            "min_denominator": report.config.min_denominator,
            "publish_zeros": report.config.publish_zeros,
            "protection": report.config.protection.unwrap_or(report.config.min_count),
            "rounding_base": report.config.rounding_base,
            "queries_folder": report.config.queries.as_ref().map(|p| p.display().to_string()),
        },
        "versions": {
            "drop_format": FORMAT_VERSION,
            "normaliser": NORMALISER_VERSION,
            "match_rules": rules,
        },
        "key_fingerprint": report.fingerprint,
        "ledger": { "entries": report.ledger.0, "head_sha256": report.ledger.1 },
        "inputs": report.inputs,
        "queries": report.tables.iter().map(|t| json!({
            "name": t.spec.name, "source": t.spec.source, "sha256": t.spec.sha256,
        })).collect::<Vec<_>>(),
        "tables": report.tables.iter().map(|t| json!({
            "name": t.spec.name,
            "title": t.spec.title,
            "dimensions": t.spec.dimensions,
            "population": t.spec.population,
            "where": t.spec.where_.iter().map(|(d, v)| json!([d, v])).collect::<Vec<_>>(),
            "percent": t.spec.percent_of,
        })).collect::<Vec<_>>(),
        "linkage": linkage,
        "suppression": {
            "method": "primary (counts from 1 to min_count - 1), then secondary over all tables \
                       at once, then an independent audit (safetally audit)",
            "all": {
                "cells": all.cells,
                "suppressed": all.primary + all.secondary,
                "percentages": all.percentages,
            },
            "tables": per_table,
        },
        "release": {
            "earlier_releases_considered": report.earlier,
            "revises_ledger_entry": report.revises,
        },
    })
}

/// Writes the report into `out` (which must not exist, or be empty, unless
/// `replace`). The folder appears whole: it is written beside, synced,
/// then renamed.
pub fn write(
    report: &Report,
    out: &Path,
    replace: bool,
    before_publish: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<PathBuf> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !replace {
            return Err(Error::Usage(format!(
                "{} already exists: give another --out, or --force to replace it",
                out.display()
            )));
        }
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".safetally-report-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(format!("cannot write in {}", parent.display()), e))?;
    let put = |rel: &str, text: &str| -> Result<()> {
        let p = tmp.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        }
        let f = std::fs::File::create(&p)
            .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))?;
        std::io::Write::write_all(&mut &f, text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))
    };
    for t in &report.tables {
        put(&format!("tables/{}.csv", t.spec.name), &table_csv(t))?;
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON") + "\n";
    put("summary.json", &pretty(&summary(report)))?;
    put("report.md", &markdown(report))?;
    put("report.html", &super::html::page(report))?;
    put("manifest.json", &pretty(&manifest(report)))?;
    sync_dir(&tmp.path().join("tables"));
    sync_dir(tmp.path());
    before_publish(tmp.path())?;
    let staged = tmp.keep();
    if out.exists() {
        // Replace: move the old one aside first, so a failure keeps it.
        let old = parent.join(format!(
            ".safetally-old-{}",
            out.file_name().and_then(|n| n.to_str()).unwrap_or("report")
        ));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old)
            .map_err(|e| Error::io(format!("cannot replace {}", out.display()), e))?;
        std::fs::rename(&staged, out)
            .map_err(|e| Error::io(format!("cannot write {}", out.display()), e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staged, out)
            .map_err(|e| Error::io(format!("cannot write {}", out.display()), e))?;
    }
    sync_dir(parent);
    Ok(out.to_path_buf())
}
