//! `store status`: the submission matrix, NGOs by month, and the chase
//! list of what is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::ledger::Outcome;
use super::{Members, Slot, State};
use crate::pseudonymise::Period;
use crate::schema::Form;

/// One form's matrix.
#[derive(Debug, Serialize)]
pub struct Matrix {
    /// The form.
    pub form: String,
    /// The months shown, in order.
    pub periods: Vec<String>,
    /// One row per NGO: members first (when there is a member list), then
    /// any other org seen in the ledger.
    pub orgs: Vec<OrgRow>,
    /// Cells with drops.
    pub sent: usize,
    /// Cells without an accepted drop: the chase list.
    pub missing: Vec<Missing>,
}

/// One NGO's row.
#[derive(Debug, Serialize)]
pub struct OrgRow {
    /// Org code.
    pub org: String,
    /// Display name from the member list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the org is expected to send this form: on the member list
    /// for it (always true without a list). Gaps are chased only for these.
    pub member: bool,
    /// One cell per period.
    pub cells: Vec<Cell>,
}

/// One NGO and month.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// YYYY-MM.
    pub period: String,
    /// `sent`, `refused` (offered, nothing accepted) or `missing`.
    pub status: &'static str,
    /// Rows in the current drop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Rows the NGO's run rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_rows: Option<u64>,
    /// SHA-256 of the current drop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When it was filed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    /// Drops filed for this cell (more than one: later ones superseded
    /// earlier ones).
    pub versions: usize,
    /// Why the last refused drop was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A cell to chase.
#[derive(Debug, Serialize)]
pub struct Missing {
    /// Org code.
    pub org: String,
    /// YYYY-MM.
    pub period: String,
    /// `missing` or `refused`.
    pub status: &'static str,
}

/// Builds the matrix of one form. The months run from `from` (or the
/// earliest drop) to `to` (or the latest).
pub fn matrix(
    state: &State,
    members: Option<&Members>,
    form: Form,
    from: Option<Period>,
    to: Option<Period>,
) -> Matrix {
    let code = form.code();
    let current = state.current();
    let mut versions: BTreeMap<&Slot, usize> = BTreeMap::new();
    for f in state.filed.values() {
        if f.slot.form == code {
            *versions.entry(&f.slot).or_default() += 1;
        }
    }
    // Refusals that name a slot, the last one per slot.
    let mut refused: BTreeMap<Slot, String> = BTreeMap::new();
    for e in &state.ledger.entries {
        if e.outcome == Outcome::Refused
            && e.form.as_deref() == Some(code)
            && let (Some(org), Some(period)) = (&e.org, &e.period)
        {
            refused.insert(
                Slot {
                    form: code.to_string(),
                    period: period.clone(),
                    org: org.clone(),
                },
                e.reason.clone().unwrap_or_default(),
            );
        }
    }
    let seen_periods: BTreeSet<Period> = versions
        .keys()
        .map(|s| s.period.as_str())
        .chain(refused.keys().map(|s| s.period.as_str()))
        .filter_map(|p| p.parse().ok())
        .collect();
    let first = from.or_else(|| seen_periods.first().copied());
    let last = to.or_else(|| seen_periods.last().copied());
    let mut periods = Vec::new();
    if let (Some(mut p), Some(last)) = (first, last) {
        while p <= last {
            periods.push(p.to_string());
            p = p.next();
        }
    }
    let mut orgs: Vec<(String, Option<String>, bool)> = Vec::new();
    // Members that send this form; then any other org seen for it (a
    // member that sent a form it is not listed for, or an org not on the
    // list), whose gaps are not chased.
    if let Some(m) = members {
        orgs.extend(
            m.members
                .iter()
                .filter(|(_, m)| m.sends(form))
                .map(|(c, m)| (c.clone(), Some(m.name().to_string()), true)),
        );
    }
    let listed: BTreeSet<String> = orgs.iter().map(|(c, _, _)| c.clone()).collect();
    let others: BTreeSet<&str> = versions
        .keys()
        .map(|s| s.org.as_str())
        .chain(refused.keys().map(|s| s.org.as_str()))
        .filter(|o| !listed.contains(*o))
        .collect();
    orgs.extend(others.into_iter().map(|o| {
        let name = members
            .and_then(|m| m.members.get(o))
            .map(|m| m.name().to_string());
        (o.to_string(), name, members.is_none())
    }));
    let mut sent = 0;
    let mut missing = Vec::new();
    let rows = orgs
        .into_iter()
        .map(|(org, name, member)| {
            let cells = periods
                .iter()
                .map(|period| {
                    let slot = Slot {
                        form: code.to_string(),
                        period: period.clone(),
                        org: org.clone(),
                    };
                    let mut cell = Cell {
                        period: period.clone(),
                        status: "missing",
                        rows: None,
                        rejected_rows: None,
                        sha256: None,
                        received: None,
                        versions: versions.get(&slot).copied().unwrap_or(0),
                        refused: None,
                    };
                    if let Some((sha, f)) = current.get(&slot) {
                        sent += 1;
                        cell.status = "sent";
                        cell.rows = Some(f.rows);
                        cell.rejected_rows = Some(f.rejected_rows);
                        cell.sha256 = Some(sha.to_string());
                        cell.received = Some(f.received.clone());
                    } else {
                        if let Some(reason) = refused.get(&slot) {
                            cell.status = "refused";
                            cell.refused = Some(reason.clone());
                        }
                        if member {
                            missing.push(Missing {
                                org: org.clone(),
                                period: period.clone(),
                                status: cell.status,
                            });
                        }
                    }
                    cell
                })
                .collect();
            OrgRow {
                org,
                name,
                member,
                cells,
            }
        })
        .collect();
    Matrix {
        form: code.to_string(),
        periods,
        orgs: rows,
        sent,
        missing,
    }
}

impl Matrix {
    /// The matrix as text: NGOs by month, then the chase list.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let expected = self.orgs.iter().filter(|o| o.member).count() * self.periods.len();
        let span = match (self.periods.first(), self.periods.last()) {
            (Some(a), Some(b)) => format!("{a} to {b}"),
            _ => "no drops yet".to_string(),
        };
        let _ = writeln!(
            s,
            "{}: {} NGOs x {} months ({span}); {} drops in, {} to chase",
            self.form,
            self.orgs.len(),
            self.periods.len(),
            self.sent,
            self.missing.len().min(expected)
        );
        if self.periods.is_empty() {
            return s;
        }
        let width = self
            .orgs
            .iter()
            .map(|o| o.org.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let _ = write!(s, "{:<width$}", "org");
        for p in &self.periods {
            let _ = write!(s, " {p:>7}");
        }
        s.push('\n');
        let mut any_rejected = false;
        let mut any_refused = false;
        for o in &self.orgs {
            let _ = write!(s, "{:<width$}", o.org);
            for c in &o.cells {
                let text = match c.status {
                    "sent" => {
                        let mark = if c.rejected_rows.unwrap_or(0) > 0 {
                            any_rejected = true;
                            "*"
                        } else {
                            ""
                        };
                        format!("{}{mark}", c.rows.unwrap_or(0))
                    }
                    "refused" => {
                        any_refused = true;
                        "X".to_string()
                    }
                    _ => "--".to_string(),
                };
                let _ = write!(s, " {text:>7}");
            }
            if !o.member {
                s.push_str(if o.name.is_some() {
                    "   (not listed as sending this form)"
                } else {
                    "   (not on the member list)"
                });
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "cells: rows in the current drop; -- nothing received{}{}",
            if any_refused {
                "; X offered but refused"
            } else {
                ""
            },
            if any_rejected {
                "; * the NGO left rows out (--allow-rejects)"
            } else {
                ""
            }
        );
        if !self.missing.is_empty() {
            s.push_str("to chase:\n");
            let mut by_org: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for m in &self.missing {
                let label = if m.status == "refused" {
                    format!("{} (refused)", m.period)
                } else {
                    m.period.clone()
                };
                by_org.entry(&m.org).or_default().push(label);
            }
            for o in &self.orgs {
                if let Some(periods) = by_org.get(o.org.as_str()) {
                    let name = o
                        .name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default();
                    let _ = writeln!(s, "  {}{name}: {}", o.org, periods.join(", "));
                }
            }
        }
        s
    }
}
