//! A bar chart per table for `report.html`, drawn by `plotters` into an
//! inline SVG string (no JavaScript, no fonts: the browser sets the text).
//!
//! Bars are horizontal, one per cell that is not a margin: for a table of
//! one dimension one bar per value; for more, a group of bars per value of
//! the first dimension, one colour per value of the others, with a legend.
//! A suppressed cell gets no bar, only its `<5` label, and the axis is
//! scaled on the published counts alone, so nothing in the drawing depends
//! on a hidden count. Percentages are written only where the row has one.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::html::esc;
use super::output::{cell_text, label, pct, thousands};
use super::tables::{Flag, Row, Table};

/// The colours of the series, in order (the first is every one-dimension
/// table's bars). Dark enough for white paper, told apart in grey too.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x5f, 0x99),
    RGBColor(0xe0, 0x7b, 0x28),
    RGBColor(0x4e, 0x9a, 0x3f),
    RGBColor(0x8c, 0x5b, 0xb0),
    RGBColor(0xb2, 0x3a, 0x48),
    RGBColor(0x6b, 0x6b, 0x6b),
];

const GREY: RGBColor = RGBColor(0x6b, 0x6b, 0x6b);
const LIGHT: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
/// The chart's width in SVG units; it scales to the page's width.
const WIDTH: u32 = 520;
/// Text size in SVG units (plotters writes `size / 1.24` as font-size).
const TEXT: f64 = 15.0 * 1.24;
const BAR: f64 = 24.0;
const SUB_BAR: f64 = 17.0;
const GROUP_GAP: f64 = 12.0;
const LEGEND: u32 = 30;
const AXIS: u32 = 30;

/// One bar: its group, series and row.
struct Bar<'a> {
    group: usize,
    series: usize,
    row: &'a Row,
}

/// The category axis: `n` groups over `0..n` (group 0 at the top), one
/// label at the centre of each.
struct Groups(usize);

impl Ranged for Groups {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.0 as f64 * span).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        (0..self.0)
            .map(|g| self.0 as f64 - g as f64 - 0.5)
            .collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

/// The chart of a table as an `<svg>` element, or `None` when the table
/// has no cell to draw.
pub fn svg(t: &Table, min: u64) -> Option<String> {
    let dims = &t.spec.dimensions;
    let mut groups: Vec<String> = Vec::new();
    let mut series: Vec<String> = Vec::new();
    let mut bars = Vec::new();
    for r in t.rows.iter().filter(|r| !r.is_margin()) {
        let g = label(&dims[0], &r.labels[0]);
        let s = dims[1..]
            .iter()
            .zip(&r.labels[1..])
            .map(|(d, v)| label(d, v))
            .collect::<Vec<_>>()
            .join(", ");
        let group = position_or_push(&mut groups, g);
        let series = position_or_push(&mut series, s);
        bars.push(Bar {
            group,
            series,
            row: r,
        });
    }
    if bars.is_empty() {
        return None;
    }
    let legend = dims.len() > 1;
    let per_group = series.len() as f64;
    let group_h = if legend {
        per_group * SUB_BAR + GROUP_GAP
    } else {
        BAR + GROUP_GAP
    };
    let plot_h = (groups.len() as f64 * group_h).ceil() as u32;
    let height = plot_h + AXIS + 10 + if legend { LEGEND } else { 0 };
    // Only published counts scale the axis: a hidden count moves nothing.
    let top = bars
        .iter()
        .filter(|b| b.row.flag == Flag::None)
        .map(|b| b.row.count)
        .max()
        .unwrap_or(0);
    let x_max = ((top as f64 * 1.35).ceil() as u64).max(min.max(5));
    let longest = groups.iter().map(|g| g.chars().count()).max().unwrap_or(1);
    let label_w = (longest as f64 * 8.6 + 26.0).clamp(50.0, 200.0) as u32;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let (head, body) = root.split_vertically(if legend { LEGEND } else { 0 });
        if legend {
            draw_legend(&head, &series).ok()?;
        }
        let n = groups.len() as f64;
        // Group g (0 first, at the top) spans y from n-g-1 to n-g.
        let mut chart = ChartBuilder::on(&body)
            .margin_right(26)
            .margin_top(6)
            .margin_bottom(4)
            .x_label_area_size(AXIS)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0u64..x_max, Groups(groups.len()))
            .ok()?;
        let group_name = |y: &f64| {
            let g = (n - y).floor() as usize;
            groups.get(g).cloned().unwrap_or_default()
        };
        let count_label = |x: &u64| thousands(*x);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(6)
            .light_line_style(TRANSPARENT)
            .bold_line_style(LIGHT)
            .axis_style(GREY)
            .label_style(("sans-serif", TEXT).into_font().color(&BLACK))
            .y_label_formatter(&group_name)
            .x_label_formatter(&count_label)
            .draw()
            .ok()?;
        let frac = |b: &Bar| -> (f64, f64) {
            let top = n - b.group as f64;
            if legend {
                let unit = 1.0 / (per_group + GROUP_GAP / SUB_BAR);
                let y0 = top - unit * (GROUP_GAP / SUB_BAR / 2.0 + b.series as f64);
                (y0, y0 - unit)
            } else {
                let pad = GROUP_GAP / group_h / 2.0;
                (top - pad, top - 1.0 + pad)
            }
        };
        let colour = |b: &Bar| PALETTE[if legend { b.series % PALETTE.len() } else { 0 }];
        chart
            .draw_series(
                bars.iter()
                    .filter(|b| b.row.flag == Flag::None && b.row.count > 0)
                    .map(|b| {
                        let (y0, y1) = frac(b);
                        Rectangle::new([(0, y0), (b.row.count, y1)], colour(b).filled())
                    }),
            )
            .ok()?;
        let value_style = ("sans-serif", TEXT * 0.9)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let hidden_style = ("sans-serif", TEXT * 0.9)
            .into_font()
            .color(&GREY)
            .pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(bars.iter().map(|b| {
                let (y0, y1) = frac(b);
                let y = (y0 + y1) / 2.0;
                let published = b.row.flag == Flag::None;
                // Suppressed: no bar and no count, only the mark at the axis.
                let x = if published { b.row.count } else { 0 };
                let mut text = cell_text(b.row);
                if let Some(p) = b.row.percent.filter(|_| published) {
                    text = format!("{text} ({})", pct(p));
                }
                let style = if published {
                    value_style.clone()
                } else {
                    hidden_style.clone()
                };
                EmptyElement::at((x, y)) + Text::new(text, (5, 0), style)
            }))
            .ok()?;
        root.present().ok()?;
    }
    Some(accessible(&out, t, &series))
}

fn position_or_push(v: &mut Vec<String>, s: String) -> usize {
    match v.iter().position(|x| *x == s) {
        Some(i) => i,
        None => {
            v.push(s);
            v.len() - 1
        }
    }
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[String],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = ("sans-serif", TEXT * 0.9)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let mut x = 16i32;
    for (i, s) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        area.draw(&Rectangle::new([(x, 9), (x + 14, 23)], c.filled()))?;
        area.draw(&Text::new(s.clone(), (x + 19, 16), style.clone()))?;
        x += 19 + (s.chars().count() as i32 * 9) + 20;
    }
    Ok(())
}

/// Makes plotters' `<svg>` scale to the page and gives it a title: the
/// fixed `width`/`height` give way to the `chart` class (width 100%), and
/// `role="img"` with a `<title>` names it; the table beside it is the text
/// alternative.
fn accessible(svg: &str, t: &Table, series: &[String]) -> String {
    let Some(end) = svg.find('>') else {
        return svg.to_string();
    };
    let open = &svg[..end];
    let view_box = open
        .split("viewBox=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("0 0 640 400");
    let id = format!("chart-{}", t.spec.name);
    let mut title = format!("Bar chart: {}", t.spec.title);
    if series.len() > 1 {
        title.push_str(&format!("; bars for {}", series.join(", ")));
    }
    title.push_str(". The table below gives the figures.");
    format!(
        "<svg class=\"chart\" viewBox=\"{view_box}\" xmlns=\"http://www.w3.org/2000/svg\" \
         role=\"img\" aria-labelledby=\"{id}\"><title id=\"{id}\">{}</title>{}",
        esc(&title),
        svg[end + 1..].trim_start()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tables::{QuerySpec, TOTAL};

    fn table(dims: &[&str], rows: &[(&[&str], u64, Flag, Option<f64>)]) -> Table {
        Table {
            spec: QuerySpec {
                name: "t".into(),
                title: "A <test> table".into(),
                dimensions: dims.iter().map(|d| d.to_string()).collect(),
                counts: "persons".into(),
                percent_of: None,
                order: 1,
                population: "persons".into(),
                where_: vec![],
                source: "test".into(),
                sha256: String::new(),
                sql: String::new(),
            },
            rows: rows
                .iter()
                .map(|(labels, count, flag, percent)| Row {
                    labels: labels.iter().map(|l| l.to_string()).collect(),
                    count: *count,
                    flag: *flag,
                    percent: *percent,
                })
                .collect(),
        }
    }

    fn bars(svg: &str, colour: RGBColor) -> usize {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", colour.0, colour.1, colour.2);
        svg.lines()
            .filter(|l| l.starts_with("<rect") && l.contains(&fill))
            .count()
    }

    #[test]
    fn a_suppressed_cell_has_no_bar_and_its_count_is_nowhere() {
        let t = table(
            &["sex"],
            &[
                (&["female"], 4321, Flag::None, Some(99.9)),
                (&["male"], 3, Flag::Primary, None),
                (&["other"], 0, Flag::None, None),
                (&[TOTAL], 4324, Flag::None, None),
            ],
        );
        let svg = svg(&t, 5).unwrap();
        assert!(
            svg.starts_with("<svg class=\"chart\" viewBox=\"0 0 520 "),
            "{svg}"
        );
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("<title id=\"chart-t\">Bar chart: A &lt;test&gt; table."));
        let open = &svg[..svg.find('>').unwrap()];
        assert!(!open.contains(" width=\""), "scales with the page: {open}");
        assert_eq!(
            bars(&svg, PALETTE[0]),
            1,
            "only the published, non-zero cell"
        );
        assert!(svg.contains(">\n4,321 (99.9%)\n</text>"), "{svg}");
        assert!(svg.contains(">\nx\n</text>"), "{svg}");
        assert!(!svg.contains(">\n3\n</text>"), "the hidden count");
        assert!(!svg.contains(">\n4,324"), "no margin drawn");
        assert_eq!(svg, super::svg(&t, 5).unwrap(), "deterministic");
        // The hidden count moves nothing: the same chart whatever it is.
        let mut other = t.clone();
        other.rows[1].count = 1;
        assert_eq!(svg, super::svg(&other, 5).unwrap());
    }

    #[test]
    fn two_dimensions_draw_a_group_per_first_value_and_a_legend() {
        let t = table(
            &["nationality", "fear_of_consequences"],
            &[
                (&["IDN", "yes"], 177, Flag::None, Some(85.5)),
                (&["IDN", "no"], 30, Flag::None, Some(14.5)),
                (&["IDN", TOTAL], 207, Flag::None, None),
                (&["PHL", "yes"], 2, Flag::Primary, None),
                (&["PHL", "no"], 111, Flag::None, None),
                (&["PHL", TOTAL], 113, Flag::None, None),
                (&[TOTAL, "yes"], 179, Flag::None, None),
                (&[TOTAL, "no"], 141, Flag::None, None),
                (&[TOTAL, TOTAL], 320, Flag::None, None),
            ],
        );
        let svg = svg(&t, 5).unwrap();
        // Bars plus one legend swatch per series.
        assert_eq!(bars(&svg, PALETTE[0]), 1 + 1);
        assert_eq!(bars(&svg, PALETTE[1]), 2 + 1);
        for text in [
            "Indonesia",
            "Philippines",
            "Yes",
            "No",
            "177 (85.5%)",
            "111",
        ] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "{text}: {svg}"
            );
        }
        assert!(!svg.contains(">\n2\n</text>"));
        assert!(svg.contains("bars for Yes, No"));
    }
}
