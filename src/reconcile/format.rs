//! The report as a table for people, and as JSON and CSV for programs. Money is exact
//! in JSON and CSV (decimal strings); the table rounds USD to the micro-dollar.
//! Differences are tollgate minus OpenAI; percentages are of OpenAI's figure.

use std::fmt::Write as _;

use serde::Serialize;

use super::Days;
use super::compare::{Line, Report, percent};
use super::usd::Usd;

/// Decimal places of a percentage in JSON and CSV, and in the table.
const EXACT_PLACES: u32 = 4;
const TABLE_PLACES: u32 = 2;
/// Decimal places of USD in the table.
const TABLE_USD_PLACES: u32 = 6;
const FIGURES: [&str; 5] = [
    "requests",
    "input tokens",
    "cached input",
    "output tokens",
    "USD",
];

/// The model column's text for a line without one.
fn model_label(model: &str) -> &str {
    if model.is_empty() {
        "(no model)"
    } else {
        model
    }
}

fn only(line: &Line) -> Option<&'static str> {
    match (&line.provider, &line.tollgate) {
        (Some(_), None) => Some("provider"),
        (None, Some(_)) => Some("tollgate"),
        _ => None,
    }
}

fn usd(units: i128) -> String {
    Usd::from_units(units).to_string()
}

// === JSON ===

#[derive(Serialize)]
struct JsonReport<'a> {
    object: &'static str,
    since: String,
    until: String,
    by: &'static str,
    tolerance_percent: String,
    upstreams: &'a [String],
    within_tolerance: bool,
    lines_out_of_tolerance: usize,
    lines: Vec<JsonLine<'a>>,
    total: JsonLine<'a>,
    unmetered: Vec<JsonUnmetered<'a>>,
    unmetered_usd: String,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    day: Option<String>,
    model: Option<&'a str>,
    only: Option<&'static str>,
    within_tolerance: bool,
    requests: Compared<u64, i64>,
    input_tokens: Compared<u64, i64>,
    cached_tokens: Compared<u64, i64>,
    output_tokens: Compared<u64, i64>,
    usd: Compared<String, String>,
    estimated: JsonEstimated,
    unpriced_requests: u64,
    note: Option<JsonNote>,
}

/// One figure of both sides; a side with nothing for the line is `null`.
#[derive(Serialize)]
struct Compared<T, D> {
    provider: Option<T>,
    tollgate: Option<T>,
    diff: D,
    diff_percent: Option<String>,
}

#[derive(Serialize)]
struct JsonEstimated {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct JsonNote {
    code: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct JsonUnmetered<'a> {
    day: Option<String>,
    line_item: &'a str,
    usd: String,
}

fn compared<T, D>(
    line: &Line,
    index: usize,
    value: impl Fn(i128) -> T,
    diff: impl Fn(i128) -> D,
) -> Compared<T, D> {
    let (provider, tollgate) = line.pairs()[index];
    Compared {
        provider: line.provider.map(|_| value(provider)),
        tollgate: line.tollgate.map(|_| value(tollgate)),
        diff: diff(tollgate - provider),
        diff_percent: percent(provider, tollgate, EXACT_PLACES),
    }
}

fn json_line(line: &Line) -> JsonLine<'_> {
    let count = |n: i128| u64::try_from(n).unwrap_or(0);
    let signed = |n: i128| i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX });
    JsonLine {
        day: line.day.map(Days::label),
        model: line.model.as_deref(),
        only: only(line),
        within_tolerance: line.within_tolerance,
        requests: compared(line, 0, count, signed),
        input_tokens: compared(line, 1, count, signed),
        cached_tokens: compared(line, 2, count, signed),
        output_tokens: compared(line, 3, count, signed),
        usd: compared(line, 4, usd, usd),
        estimated: JsonEstimated {
            requests: line.estimated.requests,
            input_tokens: line.estimated.input_tokens,
            output_tokens: line.estimated.output_tokens,
        },
        unpriced_requests: line.unpriced_requests,
        note: line.note.map(|note| JsonNote {
            code: note.code(),
            message: note.text(),
        }),
    }
}

/// The report as one JSON object (see docs/src/reconciliation.md, "Output shapes").
pub fn to_json(report: &Report) -> serde_json::Value {
    let body = JsonReport {
        object: "tollgate.reconciliation",
        since: Days::label(report.days.first),
        until: Days::label(report.days.last),
        by: report.by.name(),
        tolerance_percent: report.tolerance.to_string(),
        upstreams: &report.upstreams,
        within_tolerance: report.within_tolerance(),
        lines_out_of_tolerance: report.lines_out_of_tolerance(),
        lines: report.lines.iter().map(json_line).collect(),
        total: json_line(&report.total),
        unmetered: report
            .unmetered
            .iter()
            .map(|u| JsonUnmetered {
                day: u.day.map(Days::label),
                line_item: &u.line_item,
                usd: u.usd.to_string(),
            })
            .collect(),
        unmetered_usd: report.unmetered_usd.to_string(),
    };
    serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
}

// === CSV ===

/// The CSV's header; one row per line, then `total`, then one per unmetered charge.
pub const CSV_HEADER: &str = "row,day,model,only,within_tolerance,\
requests_provider,requests_tollgate,requests_diff,requests_diff_percent,\
input_tokens_provider,input_tokens_tollgate,input_tokens_diff,input_tokens_diff_percent,\
cached_tokens_provider,cached_tokens_tollgate,cached_tokens_diff,cached_tokens_diff_percent,\
output_tokens_provider,output_tokens_tollgate,output_tokens_diff,output_tokens_diff_percent,\
usd_provider,usd_tollgate,usd_diff,usd_diff_percent,\
estimated_requests,estimated_input_tokens,estimated_output_tokens,unpriced_requests,note";

/// A cell safe for a spreadsheet: quoted when it must be, and never read as a formula.
fn cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) && text.parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(out: &mut String, kind: &str, line: &Line) {
    let mut cells = vec![
        kind.to_owned(),
        line.day.map(Days::label).unwrap_or_default(),
        cell(line.model.as_deref().unwrap_or_default()),
        only(line).unwrap_or_default().to_owned(),
        line.within_tolerance.to_string(),
    ];
    for (i, (provider, tollgate)) in line.pairs().into_iter().enumerate() {
        let show = |n: i128| if i == 4 { usd(n) } else { n.to_string() };
        cells.push(line.provider.map(|_| show(provider)).unwrap_or_default());
        cells.push(line.tollgate.map(|_| show(tollgate)).unwrap_or_default());
        cells.push(show(tollgate - provider));
        cells.push(percent(provider, tollgate, EXACT_PLACES).unwrap_or_default());
    }
    cells.extend([
        line.estimated.requests.to_string(),
        line.estimated.input_tokens.to_string(),
        line.estimated.output_tokens.to_string(),
        line.unpriced_requests.to_string(),
        line.note
            .map(|note| note.code())
            .unwrap_or_default()
            .to_owned(),
    ]);
    let _ = writeln!(out, "{}", cells.join(","));
}

pub fn to_csv(report: &Report) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for line in &report.lines {
        csv_line(&mut out, "line", line);
    }
    csv_line(&mut out, "total", &report.total);
    let columns = CSV_HEADER.split(',').count();
    for charge in &report.unmetered {
        let mut cells = vec![String::new(); columns];
        cells[0] = "unmetered".to_owned();
        cells[1] = charge.day.map(Days::label).unwrap_or_default();
        cells[2] = cell(&charge.line_item);
        cells[3] = "provider".to_owned();
        cells[21] = charge.usd.to_string();
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

// === table ===

/// One block's rows: label, OpenAI, tollgate, diff, diff %.
fn block(line: &Line) -> Vec<[String; 5]> {
    line.pairs()
        .into_iter()
        .enumerate()
        .map(|(i, (provider, tollgate))| {
            let show = |n: i128| {
                if i == 4 {
                    Usd::from_units(n).rounded(TABLE_USD_PLACES)
                } else {
                    n.to_string()
                }
            };
            let side = |present: bool, n: i128| if present { show(n) } else { "-".to_owned() };
            let diff = tollgate - provider;
            let signed = if diff > 0 {
                format!("+{}", show(diff))
            } else {
                show(diff)
            };
            [
                FIGURES[i].to_owned(),
                side(line.provider.is_some(), provider),
                side(line.tollgate.is_some(), tollgate),
                signed,
                percent(provider, tollgate, TABLE_PLACES)
                    .map_or_else(|| "n/a".to_owned(), |p| format!("{p}%")),
            ]
        })
        .collect()
}

fn title(line: &Line) -> String {
    let mut parts = Vec::new();
    if let Some(day) = line.day {
        parts.push(Days::label(day));
    }
    if let Some(model) = &line.model {
        parts.push(model_label(model).to_owned());
    }
    if parts.is_empty() {
        parts.push("TOTAL".to_owned());
    }
    let status = match only(line) {
        Some("provider") => "only in OpenAI's export",
        Some(_) => "only in tollgate's ledger",
        None if line.within_tolerance => "within tolerance",
        None => "OUT OF TOLERANCE",
    };
    format!("{}  [{status}]", parts.join("  "))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The report for a terminal: a header, one block per line and the total, each with
/// OpenAI's figures, tollgate's, the difference and the difference in percent.
pub fn to_table(report: &Report) -> String {
    let mut out = String::new();
    let by = match (report.by.day, report.by.model) {
        (true, true) => "day and model",
        (true, false) => "day",
        _ => "model",
    };
    let _ = writeln!(
        out,
        "OpenAI vs tollgate, {} to {} (UTC days), by {by}",
        Days::label(report.days.first),
        Days::label(report.days.last),
    );
    let _ = writeln!(
        out,
        "tollgate's side: ledger rows of upstream {}; tolerance {}% per figure",
        report.upstreams.join(", "),
        report.tolerance,
    );
    let out_of = report.lines_out_of_tolerance();
    let _ = writeln!(
        out,
        "{} of {} outside the tolerance; diff = tollgate - OpenAI, diff % of OpenAI's figure",
        plural(out_of as u64, "line", "lines"),
        report.lines.len(),
    );
    let blocks: Vec<(&Line, Vec<[String; 5]>)> = report
        .lines
        .iter()
        .chain(std::iter::once(&report.total))
        .map(|line| (line, block(line)))
        .collect();
    let mut widths = [0usize; 5];
    let header = ["", "OpenAI", "tollgate", "diff", "diff %"];
    for row in blocks.iter().flat_map(|(_, rows)| rows.iter()) {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.len());
        }
    }
    for (width, cell) in widths.iter_mut().zip(header) {
        *width = (*width).max(cell.len());
    }
    for (line, rows) in blocks {
        let _ = writeln!(out, "\n{}", title(line));
        let write_row = |out: &mut String, row: &[&str; 5]| {
            let _ = write!(out, "  {:<w$}", row[0], w = widths[0]);
            for (cell, width) in row.iter().zip(widths).skip(1) {
                let _ = write!(out, "  {cell:>width$}");
            }
            out.push('\n');
        };
        write_row(&mut out, &header);
        for row in &rows {
            write_row(&mut out, &row.each_ref().map(String::as_str));
        }
        let estimated = line.estimated;
        if estimated.requests > 0 {
            let _ = writeln!(
                out,
                "  estimated by tollgate: {}, {} input and {} output tokens",
                plural(estimated.requests, "request", "requests"),
                estimated.input_tokens,
                estimated.output_tokens,
            );
        }
        if line.unpriced_requests > 0 {
            let _ = writeln!(
                out,
                "  unpriced in tollgate: {}",
                plural(line.unpriced_requests, "request", "requests")
            );
        }
        if let Some(note) = line.note {
            let _ = writeln!(out, "  note: {}", note.text());
        }
    }
    if !report.unmetered.is_empty() {
        let _ = writeln!(
            out,
            "\nOpenAI charges tollgate does not meter (not compared): {} USD",
            report.unmetered_usd.rounded(TABLE_USD_PLACES)
        );
        for charge in &report.unmetered {
            let day = charge.day.map(|d| format!("{}  ", Days::label(d)));
            let _ = writeln!(
                out,
                "  {}{}: {} USD",
                day.unwrap_or_default(),
                charge.line_item,
                charge.usd.rounded(TABLE_USD_PLACES)
            );
        }
    }
    out
}
