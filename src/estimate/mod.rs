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
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, json};

use crate::cli::EstimateArgs;
use crate::metering::Usage;
use crate::pricing::{Catalog, Cost, UnitRates, Variant};

/// `--per-month` takes a month as 30 days.
// The batch admission check reads Batch API input lines the same way.
pub(crate) mod file;
mod report;
#[cfg(test)]
mod tests;

use file::*;
use report::*;

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
    let tier = args.tier.map(crate::cli::EstimateTier::as_str);
    report.meta.insert("tier".into(), tier.into());
    if let Some(tier) = tier {
        report.intro.push(format!("service tier: {tier}"));
        let lacking: Vec<&str> = (report.columns.iter())
            .filter(|c| c.entry.as_ref().is_some_and(|e| e.tier_unpriced))
            .map(|c| c.model.as_str())
            .collect();
        if !lacking.is_empty() {
            report.notes.push(format!(
                "{} list no {tier} rates: priced at standard, as tollgate bills a request \
                 served at a tier its model does not offer",
                lacking.join(", ")
            ));
        }
    }
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
    /// The date of the rates charged: the tier sheet's, when one was.
    as_of: Option<String>,
    rates_per_1m: UnitRates,
    /// `--tier` asked for a tier the model has no sheet for: standard rates instead.
    #[serde(skip)]
    tier_unpriced: bool,
}

fn entry(
    catalog: &Catalog,
    name: &str,
    args: &EstimateArgs,
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
    let usage = Usage::default();
    let priced = match args.tier {
        Some(tier) => catalog.price_served(Some(name), None, &usage, tier.as_str()),
        None => catalog.price(Some(name), None, &usage, args.batch),
    };
    let priced = priced.ok_or_else(|| {
        let (model, base) = (name.to_owned(), resolved.key.to_owned());
        EstimateError::NoFineTunedPrice {
            model,
            base,
            at: at.cloned(),
        }
    })?;
    let prices = resolved.prices;
    let sheet = match priced.variant {
        Variant::Flex => prices.flex.as_ref(),
        Variant::Priority => prices.priority.as_ref(),
        Variant::FineTunedFlex => prices.ft_flex.as_ref(),
        Variant::FineTunedPriority => prices.ft_priority.as_ref(),
        _ => None,
    };
    let as_of = match sheet {
        Some(sheet) => sheet.as_of.clone(),
        None => prices.as_of.clone(),
    };
    Ok(Entry {
        resolved: priced.model.to_owned(),
        variant: priced.variant,
        as_of,
        rates_per_1m: priced.rates,
        tier_unpriced: priced.tier_unpriced,
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
        cache_write_tokens: 0,
    };
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let entry = entry(catalog, name, args, None)?;
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
