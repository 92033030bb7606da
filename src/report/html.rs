//! `report.html`: one self-contained page (no file or network fetched),
//! readable on a phone and printed: inline CSS, and a bar chart per table
//! drawn by [`super::chart`] as inline SVG, with the table below it as the
//! chart's text alternative.

use std::fmt::Write as _;

use super::Report;
use super::chart;
use super::output::{cell_text, headlines, label, pct, thousands};
use super::tables::Table;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
max-width:60rem;margin:0 auto;padding:1rem;color:#1a1a1a;line-height:1.45}\
h1{font-size:1.5rem}h2{font-size:1.25rem;margin-top:2rem}h3{font-size:1.05rem;margin-top:1.5rem}\
.headline{font-size:1.1rem;background:#f3f6fa;border-left:4px solid #2b5c8a;padding:.5rem .8rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}\
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600}\
.note{color:#555;font-size:.9rem}\
svg.chart{display:block;width:100%;max-width:34rem;height:auto;margin:.5rem 0}\
@media print{body{max-width:none;padding:0}section{break-inside:avoid;page-break-inside:avoid}\
.scroll{overflow:visible}svg.chart{max-width:30rem}}";

fn table_html(t: &Table) -> String {
    let mut s = String::from("<div class=\"scroll\"><table><thead><tr>");
    for d in &t.spec.dimensions {
        let _ = write!(s, "<th>{}</th>", esc(&label("", d)));
    }
    s.push_str("<th>Persons</th>");
    if t.spec.percent_of.is_some() {
        s.push_str("<th>%</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for r in &t.rows {
        let _ = write!(
            s,
            "<tr{}>",
            if r.is_margin() {
                " class=\"total\""
            } else {
                ""
            }
        );
        for (d, v) in t.spec.dimensions.iter().zip(&r.labels) {
            let _ = write!(s, "<td>{}</td>", esc(&label(d, v)));
        }
        let _ = write!(s, "<td class=\"n\">{}</td>", esc(&cell_text(r)));
        if t.spec.percent_of.is_some() {
            let _ = write!(
                s,
                "<td class=\"n\">{}</td>",
                r.percent.map(pct).unwrap_or_default()
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

/// The whole page.
pub fn page(report: &Report) -> String {
    let min = report.config.min_count;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        esc(&report.config.title),
        esc(&report.config.title)
    );
    let _ = write!(
        s,
        "<p>{} to {}: {} monthly drops.</p>",
        esc(&report.from.to_string()),
        esc(&report.to.to_string()),
        thousands(report.inputs.len() as u64)
    );
    for h in headlines(report) {
        let _ = write!(s, "<p class=\"headline\">{}</p>", esc(&h));
    }
    for t in &report.tables {
        let _ = write!(
            s,
            "<section><h3>{}</h3><p class=\"note\">Counts {}.</p>{}{}</section>",
            esc(&t.spec.title),
            esc(&t.spec.counts),
            chart::svg(t, min).unwrap_or_default(),
            table_html(t)
        );
    }
    let _ = writeln!(
        s,
        "<p class=\"note\">{}</p></body></html>",
        esc(&super::output::suppression_note(report))
    );
    s
}
