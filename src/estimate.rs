//! `tollgate estimate`: what a workload would cost, before a single request is sent.
//!
//! Two inputs: token figures per request (`--input`, `--cached`, `--output`), or a JSONL
//! file of requests counted with the real tokenizer. Every cost is exact pico-USD
//! arithmetic on the catalog's rates (`tokens × rate`, then `× requests`); the only
//! divisions are a file's per-request average and its monthly projection, rounded half
//! up to the pico-dollar and flagged when rounding happened. Percentages are display only.
//!
//! With `--file`, `--input` and `--requests` are ignored, `--output` stands in for lines
//! without a max tokens cap, and `--cached` applies per line (capped at its prompt).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::cli::EstimateArgs;
use crate::metering::{Endpoint, Usage, tokens};
use crate::pricing::{Catalog, Cost, Rate, UnitRates, Variant};

/// `--per-month` takes a month as 30 days.
const DAYS_PER_MONTH: u64 = 30;

/// Why an estimate cannot be made. Line errors name the file and the 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// Neither `--model` nor `--compare` names a model (and there is no file to read).
    #[error("name a model with --model or --compare")]
    NoModel,
    /// The catalog cannot resolve the name.
    #[error("{}unknown model `{model}`; {}", prefix(at.as_ref()), hint(suggestions))]
    UnknownModel {
        model: String,
        suggestions: Vec<String>,
        at: Option<Place>,
    },
    /// A fine-tuned model whose base model lists no fine-tuned rates.
    #[error("{}`{model}` has no price: `{base}` lists no fine-tuned rates", prefix(at.as_ref()))]
    NoFineTunedPrice {
        model: String,
        base: String,
        at: Option<Place>,
    },
    /// `--cached` counts prompt tokens, so it cannot exceed `--input`.
    #[error("--cached {cached} is more than --input {input}: cached tokens are part of the prompt")]
    CachedExceedsInput { cached: u64, input: u64 },
    /// `--per-month` is not `N/day`, `N/hour`, `N/minute` or `N/month`.
    #[error("--per-month `{value}`: {reason}; write N/day, N/hour, N/minute or N/month")]
    PerMonth { value: String, reason: &'static str },
    /// The `--file` cannot be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of the file is not JSON.
    #[error("{at}: not valid JSON: {source}")]
    Json {
        at: Place,
        source: serde_json::Error,
    },
    /// A line of the file is JSON but not a request body or Batch API input line.
    #[error("{at}: {reason}")]
    NotARequest { at: Place, reason: &'static str },
    /// A Batch API line for an endpoint tollgate does not price.
    #[error(
        "{at}: `{url}` is not a priced endpoint (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses)"
    )]
    UnsupportedUrl { at: Place, url: String },
    /// A line names no model and no `--model` was given.
    #[error("{at}: the request names no model; pass --model")]
    MissingModel { at: Place },
    /// A total beyond u64 tokens or u128 pico-USD.
    #[error("the estimate is too large to compute")]
    Overflow,
    /// The JSON report could not be written.
    #[error("cannot write JSON: {0}")]
    Render(#[from] serde_json::Error),
}

/// A line of the `--file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

fn prefix(at: Option<&Place>) -> String {
    at.map(|at| format!("{at}: ")).unwrap_or_default()
}

fn hint(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        "`tollgate prices` lists the catalog".to_owned()
    } else {
        format!("did you mean {}?", suggestions.join(", "))
    }
}

/// Estimates the workload `args` describes; returns the table (or JSON) to print.
///
/// # Errors
///
/// An unknown or unpriced model, bad `--per-month` or `--cached`, or an unreadable or
/// malformed `--file` (named by line): see [`EstimateError`].
pub fn run(args: &EstimateArgs, catalog: &Catalog) -> Result<String, EstimateError> {
    let month = args.per_month.as_deref().map(Month::parse).transpose()?;
    let names = model_names(args);
    let mut report = match &args.file {
        None => workload(args, catalog, &names, month.as_ref())?,
        Some(path) => file(args, catalog, &names, path, month.as_ref())?,
    };
    report.meta.insert("batch".into(), args.batch.into());
    if let Some(Month { rate, requests }) = &month {
        let (days, grouped) = (DAYS_PER_MONTH, grouped(*requests));
        report.intro.push(format!(
            "per month: {rate} = {grouped} requests (a month is {days} days)"
        ));
        let value = json!({"rate": rate, "requests": requests, "days_per_month": days});
        report.meta.insert("per_month".into(), value);
    }
    if args.json {
        report.to_json()
    } else {
        Ok(report.to_text())
    }
}

/// `--model`, then the `--compare` names, without blanks or repeats.
fn model_names(args: &EstimateArgs) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in args.model.iter().chain(&args.compare).map(|n| n.trim()) {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// A monthly volume from `--per-month`.
struct Month {
    rate: String,
    requests: u64,
}

impl Month {
    fn parse(text: &str) -> Result<Self, EstimateError> {
        let bad = |reason| EstimateError::PerMonth {
            value: text.to_owned(),
            reason,
        };
        let (count, unit) = text.split_once('/').ok_or_else(|| bad("no `/unit`"))?;
        let digits: String = count
            .trim()
            .chars()
            .filter(|c| !matches!(c, ',' | '_'))
            .collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the count is not a whole number"));
        }
        let per_month = match unit.trim() {
            "month" | "months" => 1,
            "day" | "days" => DAYS_PER_MONTH,
            "hour" | "hours" => DAYS_PER_MONTH * 24,
            "minute" | "minutes" | "min" => DAYS_PER_MONTH * 24 * 60,
            _ => return Err(bad("unknown unit")),
        };
        let requests = (digits.parse::<u64>().ok())
            .and_then(|count| count.checked_mul(per_month))
            .ok_or_else(|| bad("the count is too large"))?;
        Ok(Self {
            rate: text.trim().to_owned(),
            requests,
        })
    }
}

// === Resolution and arithmetic ===

/// The catalog entry and unit rates a model name is charged at.
#[derive(Debug, Serialize)]
struct Entry {
    resolved: String,
    variant: Variant,
    as_of: Option<String>,
    rates_per_1m: UnitRates,
}

fn entry(
    catalog: &Catalog,
    name: &str,
    batch: bool,
    at: Option<&Place>,
) -> Result<Entry, EstimateError> {
    let Some(resolved) = catalog.resolve(name) else {
        let suggestions = catalog
            .suggest(name)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let (model, at) = (name.to_owned(), at.cloned());
        return Err(EstimateError::UnknownModel {
            model,
            suggestions,
            at,
        });
    };
    let priced = catalog
        .price(Some(name), None, &Usage::default(), batch)
        .ok_or_else(|| {
            let (model, base) = (name.to_owned(), resolved.key.to_owned());
            EstimateError::NoFineTunedPrice {
                model,
                base,
                at: at.cloned(),
            }
        })?;
    Ok(Entry {
        resolved: priced.model.to_owned(),
        variant: priced.variant,
        as_of: resolved.prices.as_of.clone(),
        rates_per_1m: priced.rates,
    })
}

fn times(cost: Cost, n: u64) -> Result<Cost, EstimateError> {
    let pico = cost.as_pico().checked_mul(u128::from(n));
    pico.map(Cost::from_pico).ok_or(EstimateError::Overflow)
}

/// `cost × num / den` rounded half up to the pico-dollar, and whether that was exact.
fn ratio(cost: Cost, num: u64, den: u64) -> Result<(Cost, bool), EstimateError> {
    if den == 0 {
        return Ok((Cost::ZERO, true));
    }
    let (product, den) = (times(cost, num)?.as_pico(), u128::from(den));
    let rest = product % den;
    Ok((
        Cost::from_pico(product / den + u128::from(rest * 2 >= den)),
        rest == 0,
    ))
}

/// `part / whole` in percent with one decimal, rounded half up (display only).
fn percent(part: Cost, whole: Cost) -> String {
    let (part, whole) = (part.as_pico(), whole.as_pico());
    let permille = (part.checked_mul(2000).and_then(|p| p.checked_add(whole)))
        .zip(whole.checked_mul(2))
        .and_then(|(p, w)| p.checked_div(w));
    permille.map_or_else(|| "0.0".to_owned(), |p| format!("{}.{}", p / 10, p % 10))
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// === Workload: token figures per request ===

fn workload(
    args: &EstimateArgs,
    catalog: &Catalog,
    names: &[String],
    month: Option<&Month>,
) -> Result<Report, EstimateError> {
    let (input, cached, output) = (args.input, args.cached, args.output);
    if names.is_empty() {
        return Err(EstimateError::NoModel);
    }
    if cached > input {
        return Err(EstimateError::CachedExceedsInput { cached, input });
    }
    let usage = Usage {
        prompt_tokens: input,
        cached_tokens: cached,
        completion_tokens: output,
        reasoning_tokens: 0,
    };
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let entry = entry(catalog, name, args.batch, None)?;
        let one = entry.rates_per_1m.cost(&usage);
        let mut cost = BTreeMap::from([
            ("per_request", one),
            ("per_1k", times(one, 1_000)?),
            ("per_100k", times(one, 100_000)?),
            ("total", times(one, args.requests)?),
        ]);
        if let Some(month) = month {
            cost.insert("per_month", times(one, month.requests)?);
        }
        columns.push(Column {
            model: name.clone(),
            entry: Some(entry),
            tally: None,
            cost,
        });
    }
    let mut rows = vec![
        ("per_request", "per request".to_owned()),
        ("per_1k", "per 1K requests".to_owned()),
        ("per_100k", "per 100K requests".to_owned()),
    ];
    if args.requests != 1 {
        rows.push((
            "total",
            format!("total ({} requests)", grouped(args.requests)),
        ));
    }
    rows.extend(month.map(|_| ("per_month", "per month".to_owned())));
    let (g_in, g_cached, g_out) = (grouped(input), grouped(cached), grouped(output));
    let tokens = json!({"input": input, "cached": cached, "output": output});
    Ok(Report {
        intro: vec![format!(
            "per request: {g_in} input tokens ({g_cached} cached), {g_out} output tokens"
        )],
        notes: Vec::new(),
        meta: Map::from_iter([
            ("tokens".into(), tokens),
            ("requests".into(), args.requests.into()),
        ]),
        rows,
        compare: columns.len() > 1,
        columns,
        all: None,
    })
}

// === File: JSONL requests through the tokenizer ===

/// A file's tokens, as counted for one model.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Tally {
    requests: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    /// An upper bound when `capped_requests > 0`: a max tokens cap counts in full.
    output_tokens: u64,
    capped_requests: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) -> Result<(), EstimateError> {
        let sum = |a: u64, b: u64| a.checked_add(b).ok_or(EstimateError::Overflow);
        *self = Self {
            requests: sum(self.requests, other.requests)?,
            prompt_tokens: sum(self.prompt_tokens, other.prompt_tokens)?,
            cached_tokens: sum(self.cached_tokens, other.cached_tokens)?,
            output_tokens: sum(self.output_tokens, other.output_tokens)?,
            capped_requests: sum(self.capped_requests, other.capped_requests)?,
        };
        Ok(())
    }
}

/// One request of the file: a plain request body or a Batch API input line's `body`.
struct Request {
    endpoint: Endpoint,
    body: Value,
}

impl Request {
    fn parse(text: &str, at: &Place, fallback_model: Option<&str>) -> Result<Self, EstimateError> {
        let not = |reason| EstimateError::NotARequest {
            at: at.clone(),
            reason,
        };
        let value = serde_json::from_str(text);
        let Value::Object(mut line) = value.map_err(|source| EstimateError::Json {
            at: at.clone(),
            source,
        })?
        else {
            return Err(not("not a JSON object"));
        };
        if line.contains_key("url") || line.contains_key("custom_id") {
            let url = line
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| not("no `url`"))?;
            let endpoint =
                (url.strip_prefix("/v1").and_then(Endpoint::from_path)).ok_or_else(|| {
                    EstimateError::UnsupportedUrl {
                        at: at.clone(),
                        url: url.to_owned(),
                    }
                })?;
            return match line.remove("body") {
                Some(body @ Value::Object(_)) => Ok(Self { endpoint, body }),
                _ => Err(not("a Batch API line without a `body` object")),
            };
        }
        // A plain body says its endpoint by shape; `input` is an embedding model's or
        // else the Responses API's.
        let model = line.get("model").and_then(Value::as_str).or(fallback_model);
        let endpoint = match ["messages", "prompt", "input"].map(|k| line.contains_key(k)) {
            [true, ..] => Endpoint::ChatCompletions,
            [_, true, _] => Endpoint::Completions,
            [.., true] if model.is_some_and(|m| m.contains("embedding")) => Endpoint::Embeddings,
            [.., true] => Endpoint::Responses,
            _ => {
                return Err(not(
                    "no `messages`, `prompt` or `input`: not a request body",
                ));
            }
        };
        Ok(Self {
            endpoint,
            body: Value::Object(line),
        })
    }

    fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Output tokens: the max tokens cap (times `n` choices) or else `default`; capped?
    fn output(&self, default: u64) -> (u64, bool) {
        let field = |key: &str| self.body.get(key).and_then(Value::as_u64);
        let cap = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .into_iter()
            .find_map(field);
        let choices = field("n").filter(|_| self.endpoint != Endpoint::Responses);
        match self.endpoint {
            Endpoint::Embeddings => (0, false),
            _ => (
                cap.unwrap_or(default)
                    .saturating_mul(choices.unwrap_or(1).max(1)),
                cap.is_some(),
            ),
        }
    }
}

fn file(
    args: &EstimateArgs,
    catalog: &Catalog,
    names: &[String],
    path: &Path,
    month: Option<&Month>,
) -> Result<Report, EstimateError> {
    let unreadable = |source| EstimateError::Read {
        path: path.to_owned(),
        source,
    };
    let column = |model: &str, at: Option<&Place>| -> Result<Column, EstimateError> {
        let entry = Some(entry(catalog, model, args.batch, at)?);
        let (tally, cost) = (Some(Tally::default()), BTreeMap::new());
        Ok(Column {
            model: model.to_owned(),
            entry,
            tally,
            cost,
        })
    };
    // Named models price every line; without them each line is priced as its own model.
    let fixed = !names.is_empty();
    let mut columns = names
        .iter()
        .map(|n| column(n, None))
        .collect::<Result<Vec<_>, _>>()?;
    let reader = BufReader::new(std::fs::File::open(path).map_err(unreadable)?);
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(unreadable)?;
        if line.trim().is_empty() {
            continue;
        }
        let at = Place {
            path: path.to_owned(),
            line: index + 1,
        };
        let request = Request::parse(&line, &at, names.first().map(String::as_str))?;
        if !fixed {
            let model =
                (request.model()).ok_or_else(|| EstimateError::MissingModel { at: at.clone() })?;
            if !columns.iter().any(|c| c.model == model) {
                columns.push(column(model, Some(&at))?);
            }
        }
        let (output, capped) = request.output(args.output);
        for c in columns
            .iter_mut()
            .filter(|c| fixed || request.model() == Some(&c.model))
        {
            let prompt = tokens::count_prompt(request.endpoint, &c.model, &request.body);
            c.tally.get_or_insert_default().add(&Tally {
                requests: 1,
                prompt_tokens: prompt,
                cached_tokens: args.cached.min(prompt),
                output_tokens: output,
                capped_requests: u64::from(capped),
            })?;
        }
    }
    file_report(path, columns, month, fixed)
}

fn file_report(
    path: &Path,
    mut columns: Vec<Column>,
    month: Option<&Month>,
    fixed: bool,
) -> Result<Report, EstimateError> {
    let mut rounded = false;
    let mut costs = |total: Cost, requests: u64| -> Result<_, EstimateError> {
        let (average, exact) = ratio(total, 1, requests)?;
        rounded |= !exact;
        let mut cost = BTreeMap::from([("total", total), ("average", average)]);
        if let Some(month) = month {
            let (monthly, exact) = ratio(total, month.requests, requests)?;
            rounded |= !exact;
            cost.insert("per_month", monthly);
        }
        Ok(cost)
    };
    let (mut all, mut all_total) = (Tally::default(), Cost::ZERO);
    for c in &mut columns {
        let (tally, rates) = (
            c.tally.unwrap_or_default(),
            c.entry.as_ref().map(|e| e.rates_per_1m),
        );
        let usage = Usage {
            prompt_tokens: tally.prompt_tokens,
            cached_tokens: tally.cached_tokens,
            completion_tokens: tally.output_tokens,
            reasoning_tokens: 0,
        };
        let total = rates.map_or(Cost::ZERO, |r| r.cost(&usage));
        all.add(&tally)?;
        all_total = all_total
            .checked_add(total)
            .ok_or(EstimateError::Overflow)?;
        c.cost = costs(total, tally.requests)?;
    }
    let all = match columns.len() {
        2.. if !fixed => {
            let cost = costs(all_total, all.requests)?;
            Some(Column {
                model: "all".to_owned(),
                entry: None,
                tally: Some(all),
                cost,
            })
        }
        _ => None,
    };
    let mut notes = Vec::new();
    let counted = all
        .as_ref()
        .or(columns.first())
        .and_then(|c| c.tally)
        .unwrap_or_default();
    if counted.capped_requests > 0 {
        let (capped, of) = (grouped(counted.capped_requests), grouped(counted.requests));
        notes.push(format!(
            "output tokens are an upper bound: {capped} of {of} requests set a max tokens cap, counted in full"
        ));
    }
    if rounded {
        notes.push("averages and monthly figures are rounded to 0.000000000001 USD".to_owned());
    }
    let mut rows = vec![
        ("total", "total".to_owned()),
        ("average", "average per request".to_owned()),
    ];
    rows.extend(month.map(|_| ("per_month", "per month (at the average)".to_owned())));
    Ok(Report {
        intro: vec![format!("file: {}", path.display())],
        notes,
        meta: Map::from_iter([
            ("file".into(), path.display().to_string().into()),
            ("rounded".into(), rounded.into()),
        ]),
        rows,
        compare: fixed && columns.len() > 1,
        columns,
        all,
    })
}

// === Report ===

struct Report {
    /// Lines above the table: what was estimated.
    intro: Vec<String>,
    /// Lines below it: caveats, also in the JSON.
    notes: Vec<String>,
    /// The JSON object's other fields (`tokens`, `file`, `per_month`…).
    meta: Map<String, Value>,
    /// The cost rows of the table (key in `Column::cost`, label); the first is compared.
    rows: Vec<(&'static str, String)>,
    columns: Vec<Column>,
    /// The sum over a file's models, when it has several.
    all: Option<Column>,
    /// The columns price the same workload, so the cheapest is named.
    compare: bool,
}

#[derive(Debug, Serialize)]
struct Column {
    model: String,
    #[serde(flatten)]
    entry: Option<Entry>,
    #[serde(flatten)]
    tally: Option<Tally>,
    /// Exact decimal strings in JSON.
    cost: BTreeMap<&'static str, Cost>,
}

#[derive(Debug, Serialize)]
struct Cheapest<'a> {
    model: &'a str,
    by: &'static str,
    savings: Vec<Saving<'a>>,
}

/// What the cheapest model saves against another: exact, and in percent of the other.
#[derive(Debug, Serialize)]
struct Saving<'a> {
    versus: &'a str,
    difference: Cost,
    percent: String,
}

impl Report {
    fn cheapest(&self) -> Option<Cheapest<'_>> {
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

    fn to_json(&self) -> Result<String, EstimateError> {
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

    fn to_text(&self) -> String {
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
    fn table(&self) -> Vec<Option<(String, Vec<String>)>> {
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
fn render_table(out: &mut String, rows: &[Option<(String, Vec<String>)>]) {
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
#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn args(model: &str, input: u64, cached: u64, output: u64) -> EstimateArgs {
        EstimateArgs {
            model: Some(model.to_owned()),
            compare: Vec::new(),
            input,
            cached,
            output,
            requests: 1,
            batch: false,
            per_month: None,
            file: None,
            json: true,
        }
    }

    #[allow(clippy::unwrap_used, reason = "test helper")]
    fn json_of(args: &EstimateArgs) -> Value {
        serde_json::from_str(&run(args, &Catalog::builtin()).unwrap()).unwrap()
    }

    /// A JSONL file: blank lines are skipped but still counted in line numbers.
    #[allow(clippy::unwrap_used, reason = "test helper")]
    fn jsonl(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(lines.join("\n").as_bytes()).unwrap();
        file
    }

    #[test]
    fn common_workloads() {
        // Hand-computed: tokens × USD per 1M = µ$; then × 1K, × 100K, × requests.
        // (what, model, input, cached, output, batch, requests,
        //  (catalog entry, variant), [per request, per 1K, per 100K, total])
        let table = [
            // gpt-4o-mini: 1,000 × 0.15 + 300 × 0.60 = 150 + 180 = 330 µ$; × 3 = 990 µ$
            (
                "chatbot reply",
                "gpt-4o-mini-2024-07-18",
                (1_000, 0, 300, false, 3),
                ("gpt-4o-mini", "standard"),
                ["0.00033", "0.33", "33", "0.00099"],
            ),
            // gpt-4.1-nano: 500 × 0.10 + 5 × 0.40 = 50 + 2 = 52 µ$; × 10,000 = $0.52
            (
                "classification",
                "gpt-4.1-nano",
                (500, 0, 5, false, 10_000),
                ("gpt-4.1-nano", "standard"),
                ["0.000052", "0.052", "5.2", "0.52"],
            ),
            // gpt-4o-mini: 1,976 × 0.15 + 1,024 × 0.075 + 400 × 0.60
            // = 296.4 + 76.8 + 240 = 613.2 µ$; × 250 = $0.1533
            (
                "extraction",
                "gpt-4o-mini",
                (3_000, 1_024, 400, false, 250),
                ("gpt-4o-mini", "standard"),
                ["0.0006132", "0.6132", "61.32", "0.1533"],
            ),
            // gpt-4.1-nano batch: 200 × 0.05 + 2 × 0.20 = 10 + 0.4 = 10.4 µ$; × 1M = $10.4
            (
                "routing",
                "gpt-4.1-nano",
                (200, 0, 2, true, 1_000_000),
                ("gpt-4.1-nano", "batch"),
                ["0.0000104", "0.0104", "1.04", "10.4"],
            ),
            // gpt-4o: 8,000 × 2.50 + 500 × 10.00 = 20,000 + 5,000 = 25,000 µ$; × 40 = $1
            (
                "summarization",
                "gpt-4o",
                (8_000, 0, 500, false, 40),
                ("gpt-4o", "standard"),
                ["0.025", "25", "2500", "1"],
            ),
        ];
        for (what, model, (input, cached, output, batch, requests), entry, costs) in table {
            let mut args = args(model, input, cached, output);
            (args.batch, args.requests) = (batch, requests);
            let json = json_of(&args);
            let priced = &json["models"][0];
            assert_eq!(
                (priced["model"].as_str(), priced["resolved"].as_str()),
                (Some(model), Some(entry.0)),
                "{what}"
            );
            assert_eq!(priced["variant"], entry.1, "{what}");
            for (key, want) in ["per_request", "per_1k", "per_100k", "total"]
                .iter()
                .zip(costs)
            {
                assert_eq!(priced["cost"][key], want, "{what}: {key}");
            }
            let text = run(
                &EstimateArgs {
                    json: false,
                    ..args
                },
                &Catalog::builtin(),
            )
            .unwrap();
            assert!(
                text.contains(&format!("{model} → {} ({}", entry.0, entry.1)),
                "{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with("per request") && l.ends_with(costs[0])),
                "{text}"
            );
        }
    }

    #[test]
    fn rates_shown_are_the_ones_charged() {
        let mut args = args("gpt-4o", 100, 0, 100);
        assert_eq!(
            json_of(&args)["models"][0]["rates_per_1m"],
            json!({"input": "2.5", "cached_input": "1.25", "output": "10"})
        );
        args.batch = true;
        assert_eq!(
            json_of(&args)["models"][0]["rates_per_1m"],
            json!({"input": "1.25", "cached_input": "1.25", "output": "5"})
        );
    }

    #[test]
    fn the_default_output_is_an_aligned_table() {
        let mut args = args("gpt-4o-mini", 1_000, 0, 300);
        (args.per_month, args.json) = (Some("10000/day".to_owned()), false);
        let text = run(&args, &Catalog::builtin()).unwrap();
        let want = "\
gpt-4o-mini → gpt-4o-mini (standard, as of 2026-04-01)
per request: 1,000 input tokens (0 cached), 300 output tokens
per month: 10000/day = 300,000 requests (a month is 30 days)

USD                       gpt-4o-mini
input / 1M tokens             0.15
cached input / 1M tokens      0.075
output / 1M tokens            0.6

per request                   0.00033
per 1K requests               0.33
per 100K requests            33
per month                    99
";
        assert_eq!(text, want);
    }

    #[test]
    fn per_month() {
        // 330 µ$ per request (1,000 × 0.15 + 300 × 0.60) × requests a month (30 days).
        let table = [
            ("10000/day", 300_000, "99"),
            ("10,000/day", 300_000, "99"),
            ("500/hour", 360_000, "118.8"),
            ("2/minute", 86_400, "28.512"),
            ("1_000_000/month", 1_000_000, "330"),
            ("0/day", 0, "0"),
        ];
        for (rate, requests, cost) in table {
            let mut args = args("gpt-4o-mini", 1_000, 0, 300);
            args.per_month = Some(rate.to_owned());
            let json = json_of(&args);
            assert_eq!(json["per_month"]["requests"], requests, "{rate}");
            assert_eq!(json["per_month"]["days_per_month"], 30, "{rate}");
            assert_eq!(json["models"][0]["cost"]["per_month"], cost, "{rate}");
        }
        for bad in [
            "10000",
            "10000/week",
            "ten/day",
            "-5/day",
            "/day",
            "1.5/day",
            "99999999999999999999/day",
            "999999999999999999/minute",
        ] {
            let mut args = args("gpt-4o-mini", 1_000, 0, 300);
            args.per_month = Some(bad.to_owned());
            let error = run(&args, &Catalog::builtin()).unwrap_err();
            assert!(
                matches!(&error, EstimateError::PerMonth { value, .. } if value == bad),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn compare_names_the_cheapest() {
        let mut args = args("gpt-4o-mini", 1_000, 0, 300);
        args.compare = vec![
            "gpt-4.1-nano".to_owned(),
            "gpt-4o".to_owned(),
            "gpt-4o-mini".to_owned(),
        ];
        let json = json_of(&args);
        // 330 µ$ (gpt-4o-mini); 1,000 × 0.10 + 300 × 0.40 = 220 µ$ (gpt-4.1-nano);
        // 1,000 × 2.50 + 300 × 10.00 = 5,500 µ$ (gpt-4o).
        let costs: Vec<&Value> = (0..3)
            .map(|i| &json["models"][i]["cost"]["per_request"])
            .collect();
        assert_eq!(costs, ["0.00033", "0.00022", "0.0055"]);
        // 110 / 330 = 33.33…%, 5,280 / 5,500 = 96%.
        let want = json!({"model": "gpt-4.1-nano", "by": "per_request", "savings": [
            {"versus": "gpt-4o-mini", "difference": "0.00011", "percent": "33.3"},
            {"versus": "gpt-4o", "difference": "0.00528", "percent": "96.0"},
        ]});
        assert_eq!(json["cheapest"], want);
        args.json = false;
        let text = run(&args, &Catalog::builtin()).unwrap();
        let header = text.lines().find(|l| l.starts_with("USD")).unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["USD", "gpt-4o-mini", "gpt-4.1-nano", "gpt-4o"]
        );
        assert!(text.contains("cheapest (per request): gpt-4.1-nano\n  0.00011 USD less than gpt-4o-mini (33.3% less)\n"), "{text}");
    }

    #[test]
    fn bad_arguments() {
        let catalog = Catalog::builtin();
        let error = run(&args("gpt-4o-mni", 1, 0, 1), &catalog).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("unknown model `gpt-4o-mni`; did you mean gpt-4o-mini"),
            "{message}"
        );
        let mut compare = args("gpt-4o", 1, 0, 1);
        compare.compare = vec!["gpt-9".to_owned()];
        assert!(
            matches!(run(&compare, &catalog), Err(EstimateError::UnknownModel { model, .. }) if model == "gpt-9")
        );
        let error = run(&args("ft:o3-2025-04-16:acme::x", 1, 0, 1), &catalog).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`ft:o3-2025-04-16:acme::x` has no price: `o3` lists no fine-tuned rates"
        );
        let error = run(&args("gpt-4o", 100, 200, 1), &catalog).unwrap_err();
        assert!(matches!(
            error,
            EstimateError::CachedExceedsInput {
                cached: 200,
                input: 100
            }
        ));
        let mut none = args("", 1, 0, 1);
        none.model = None;
        assert!(matches!(run(&none, &catalog), Err(EstimateError::NoModel)));
    }

    const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there"}],"max_completion_tokens":50}"#;
    const BATCH_CHAT: &str = r#"{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Classify: great product"}],"max_tokens":5}}"#;
    const UNCAPPED: &str =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku"}]}"#;
    const BATCH_EMBED: &str = r#"{"custom_id":"e1","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":"hello world"}}"#;

    #[test]
    fn files_of_requests() {
        // o200k_base, 3 tokens per message + role + content, 3 to prime the reply:
        // "Hello there" 3+1+2+3 = 9; terse/classify (3+1+4)+(3+1+5)+3 = 20;
        // "Write a haiku" 3+1+4+3 = 11; the embedding input "hello world" = 2.
        // Output: caps 50 and 5, --output 100 for the uncapped line, none for embeddings.
        let file = jsonl(&[CHAT, "", BATCH_CHAT, UNCAPPED, BATCH_EMBED, ""]);
        let mut args = args("gpt-4o-mini", 0, 0, 100);
        args.file = Some(file.path().to_owned());
        args.per_month = Some("1000/day".to_owned());
        // 42 × 0.15 + 155 × 0.60 = 6.3 + 93 = 99.3 µ$; / 4 = 24.825 µ$; × 30,000 = $0.74475
        let json = json_of(&args);
        let mini = &json["models"][0];
        let tokens = [
            "requests",
            "prompt_tokens",
            "output_tokens",
            "capped_requests",
        ]
        .map(|k| &mini[k]);
        assert_eq!(tokens, [4, 42, 155, 2]);
        assert_eq!(
            mini["cost"],
            json!({"total": "0.0000993", "average": "0.000024825", "per_month": "0.74475"})
        );
        assert_eq!(json["rounded"], false);
        assert!(
            json["notes"][0]
                .as_str()
                .unwrap()
                .starts_with("output tokens are an upper bound: 2 of 4")
        );
        // Batch rates, two models: 42 × 0.075 + 155 × 0.30 = 49.65 µ$; 42 × 0.05 + 155 × 0.20 = 33.1 µ$.
        (args.batch, args.per_month, args.compare) = (true, None, vec!["gpt-4.1-nano".to_owned()]);
        let json = json_of(&args);
        let totals = [0, 1].map(|i| &json["models"][i]["cost"]["total"]);
        assert_eq!(totals, ["0.00004965", "0.0000331"]);
        assert_eq!(
            json["cheapest"]["savings"][0],
            json!({"versus": "gpt-4o-mini", "difference": "0.00001655", "percent": "33.3"})
        );
        // No --model: each line at its own model. gpt-4o-mini: 40 × 0.15 + 155 × 0.60 = 99 µ$;
        // text-embedding-3-small: 2 × 0.02 = 0.04 µ$; all: 99.04 µ$ over 4 requests.
        (args.model, args.compare, args.batch) = (None, Vec::new(), false);
        let json = json_of(&args);
        let by_model = [0, 1].map(|i| {
            (
                &json["models"][i]["model"],
                &json["models"][i]["cost"]["total"],
            )
        });
        assert_eq!(
            by_model,
            [
                (&json!("gpt-4o-mini"), &json!("0.000099")),
                (&json!("text-embedding-3-small"), &json!("0.00000004"))
            ]
        );
        assert_eq!(
            json["all"]["cost"],
            json!({"total": "0.00009904", "average": "0.00002476"})
        );
        assert!(json.get("cheapest").is_none());
    }

    #[test]
    fn bad_files_name_the_line() {
        let catalog = Catalog::builtin();
        let table = [
            (
                vec![CHAT, "", r#"{"model": "gpt-4o-mini", "messages": ["#],
                "3: not valid JSON",
            ),
            (vec![CHAT, "[1, 2]"], "2: not a JSON object"),
            (
                vec![r#"{"custom_id":"m","url":"/v1/moderations","body":{"input":"x"}}"#],
                "1: `/v1/moderations` is not a priced endpoint",
            ),
            (
                vec![CHAT, r#"{"custom_id":"x","url":"/v1/chat/completions"}"#],
                "2: a Batch API line without a `body` object",
            ),
            (
                vec![r#"{"temperature": 0}"#],
                "1: no `messages`, `prompt` or `input`",
            ),
            (
                vec![CHAT, r#"{"messages":[]}"#],
                "2: the request names no model; pass --model",
            ),
            (
                vec![r#"{"model":"gpt-4o-mni","messages":[]}"#],
                "1: unknown model `gpt-4o-mni`; did you mean gpt-4o-mini",
            ),
        ];
        for (lines, want) in table {
            let file = jsonl(&lines);
            let mut args = args("", 0, 0, 10);
            (args.model, args.file) = (None, Some(file.path().to_owned()));
            let message = run(&args, &catalog).unwrap_err().to_string();
            let at = format!("{}:{want}", file.path().display());
            assert!(message.starts_with(&at), "{message}\nwanted {at}");
        }
        let mut args = args("gpt-4o", 0, 0, 10);
        args.file = Some(PathBuf::from("/nonexistent/requests.jsonl"));
        assert!(matches!(
            run(&args, &catalog),
            Err(EstimateError::Read { .. })
        ));
    }

    #[test]
    fn division_rounds_half_up_and_says_so() {
        // (pico-USD, ×, ÷, result, exact)
        let table = [
            (10, 1, 3, 3, false),
            (20, 1, 3, 7, false),
            (5, 1, 2, 3, false),
            (9, 2, 3, 6, true),
            (7, 5, 0, 0, true),
        ];
        for (pico, num, den, want, exact) in table {
            let got = ratio(Cost::from_pico(pico), num, den).unwrap();
            assert_eq!(
                got,
                (Cost::from_pico(want), exact),
                "{pico} × {num} / {den}"
            );
        }
        assert!(matches!(
            times(Cost::from_pico(u128::MAX), 2),
            Err(EstimateError::Overflow)
        ));
        let percents = [
            (1, 3, "33.3"),
            (2, 3, "66.7"),
            (1, 1, "100.0"),
            (0, 0, "0.0"),
            (1, 2000, "0.1"),
        ];
        for (part, whole, want) in percents {
            assert_eq!(percent(Cost::from_pico(part), Cost::from_pico(whole)), want);
        }
    }
}
