//! The estimate as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::pricing::{Cost, Rate, UnitRates};

use super::*;

// === Report ===

pub(super) struct Report {
    /// Lines above the table: what was estimated.
    pub(super) intro: Vec<String>,
    /// Lines below it: caveats, also in the JSON.
    pub(super) notes: Vec<String>,
    /// The JSON object's other fields (`tokens`, `file`, `per_month`…).
    pub(super) meta: Map<String, Value>,
    /// The cost rows of the table (key in `Column::cost`, label); the first is compared.
    pub(super) rows: Vec<(&'static str, String)>,
    pub(super) columns: Vec<Column>,
    /// The sum over a file's models, when it has several.
    pub(super) all: Option<Column>,
    /// The columns price the same workload, so the cheapest is named.
    pub(super) compare: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Column {
    pub(super) model: String,
    #[serde(flatten)]
    pub(super) entry: Option<Entry>,
    #[serde(flatten)]
    pub(super) tally: Option<Tally>,
    /// Exact decimal strings in JSON.
    pub(super) cost: BTreeMap<&'static str, Cost>,
}

#[derive(Debug, Serialize)]
pub(super) struct Cheapest<'a> {
    pub(super) model: &'a str,
    pub(super) by: &'static str,
    pub(super) savings: Vec<Saving<'a>>,
}

/// What the cheapest model saves against another: exact, and in percent of the other.
#[derive(Debug, Serialize)]
pub(super) struct Saving<'a> {
    pub(super) versus: &'a str,
    pub(super) difference: Cost,
    pub(super) percent: String,
}

impl Report {
    pub(super) fn cheapest(&self) -> Option<Cheapest<'_>> {
        let by = self.rows.first()?.0;
        let cost = |c: &Column| c.cost.get(by).copied().unwrap_or_default();
        let best = self
            .columns
            .iter()
            .min_by_key(|c| cost(c))
            .filter(|_| self.compare)?;
        let savings = (self.columns.iter().filter(|c| !std::ptr::eq(*c, best)))
            .map(|c| {
                let difference = Cost::from_pico(cost(c).as_pico() - cost(best).as_pico());
                let percent = percent(difference, cost(c));
                Saving {
                    versus: &c.model,
                    difference,
                    percent,
                }
            })
            .collect();
        Some(Cheapest {
            model: &best.model,
            by,
            savings,
        })
    }

    pub(super) fn to_json(&self) -> Result<String, EstimateError> {
        let mut root = self.meta.clone();
        root.insert("models".into(), serde_json::to_value(&self.columns)?);
        if let Some(all) = &self.all {
            root.insert("all".into(), serde_json::to_value(all)?);
        }
        if let Some(cheapest) = self.cheapest() {
            root.insert("cheapest".into(), serde_json::to_value(cheapest)?);
        }
        root.insert("notes".into(), json!(self.notes));
        Ok(serde_json::to_string_pretty(&root)?)
    }

    pub(super) fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.columns {
            if let Some(e) = &c.entry {
                let as_of = e
                    .as_of
                    .as_deref()
                    .map(|d| format!(", as of {d}"))
                    .unwrap_or_default();
                let variant = e.variant.as_str().replace('_', " ");
                let _ = writeln!(out, "{} → {} ({variant}{as_of})", c.model, e.resolved);
            }
        }
        for line in &self.intro {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
        render_table(&mut out, &self.table());
        if let Some(Cheapest { model, savings, .. }) = self.cheapest() {
            let by = self.rows.first().map_or("", |r| r.1.as_str());
            let _ = writeln!(out, "\ncheapest ({by}): {model}");
            for Saving {
                versus,
                difference,
                percent,
            } in savings
            {
                let _ = match difference {
                    Cost::ZERO => writeln!(out, "  the same as {versus}"),
                    _ => writeln!(
                        out,
                        "  {difference} USD less than {versus} ({percent}% less)"
                    ),
                };
            }
        }
        for (i, note) in self.notes.iter().enumerate() {
            let _ = writeln!(out, "{}note: {note}", if i == 0 { "\n" } else { "" });
        }
        out
    }

    /// Header, then rows; `None` is a blank line.
    pub(super) fn table(&self) -> Vec<Option<(String, Vec<String>)>> {
        let columns: Vec<&Column> = self.columns.iter().chain(&self.all).collect();
        let row = |label: &str, cell: &dyn Fn(&Column) -> Option<String>| {
            let cells = columns
                .iter()
                .map(|c| cell(c).unwrap_or_else(|| "-".to_owned()));
            Some((label.to_owned(), cells.collect()))
        };
        let rate = |pick: fn(&UnitRates) -> Rate| {
            move |c: &Column| c.entry.as_ref().map(|e| pick(&e.rates_per_1m).to_string())
        };
        let mut rows = vec![
            row("USD", &|c| Some(c.model.clone())),
            row("input / 1M tokens", &rate(|r| r.input)),
            row("cached input / 1M tokens", &rate(|r| r.cached_input)),
            row("output / 1M tokens", &rate(|r| r.output)),
            None,
        ];
        if columns.iter().any(|c| c.tally.is_some()) {
            let count =
                |pick: fn(&Tally) -> u64| move |c: &Column| c.tally.map(|t| grouped(pick(&t)));
            let capped = columns
                .iter()
                .any(|c| c.tally.is_some_and(|t| t.capped_requests > 0));
            let output = if capped {
                "output tokens (at most)"
            } else {
                "output tokens"
            };
            rows.push(row("requests", &count(|t| t.requests)));
            rows.push(row("prompt tokens", &count(|t| t.prompt_tokens)));
            rows.push(row("cached tokens", &count(|t| t.cached_tokens)));
            rows.push(row(output, &count(|t| t.output_tokens)));
            rows.push(None);
        }
        for (key, label) in &self.rows {
            rows.push(row(label, &|c| c.cost.get(key).map(Cost::to_string)));
        }
        rows
    }
}

/// Labels left; cells right-aligned with their decimal points lined up; header as is.
pub(super) fn render_table(out: &mut String, rows: &[Option<(String, Vec<String>)>]) {
    let places = |cell: &str| cell.find('.').map_or(0, |dot| cell.len() - dot);
    let lines: Vec<&(String, Vec<String>)> = rows.iter().flatten().collect();
    let mut fraction = vec![0; lines.first().map_or(0, |(_, cells)| cells.len())];
    for (i, cell) in lines
        .iter()
        .skip(1)
        .flat_map(|(_, cells)| cells.iter().enumerate())
    {
        fraction[i] = fraction[i].max(places(cell));
    }
    let padded: Vec<Option<(&String, Vec<String>)>> = (rows.iter().enumerate())
        .map(|(row, line)| {
            let (label, cells) = line.as_ref()?;
            let pad = |(i, cell): (usize, &String)| match row {
                0 => cell.clone(),
                _ => format!("{cell}{}", " ".repeat(fraction[i] - places(cell))),
            };
            Some((label, cells.iter().enumerate().map(pad).collect()))
        })
        .collect();
    let mut widths = vec![0; fraction.len()];
    for (i, cell) in padded
        .iter()
        .flatten()
        .flat_map(|(_, c)| c.iter().enumerate())
    {
        widths[i] = widths[i].max(cell.chars().count());
    }
    let label = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for line in &padded {
        let mut text = String::new();
        if let Some((name, cells)) = line {
            text = format!("{name:<label$}");
            for (cell, width) in cells.iter().zip(&widths) {
                let _ = write!(text, "  {cell:>width$}");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
}
