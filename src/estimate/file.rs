//! `--file`: JSONL requests counted with the real tokenizer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::EstimateArgs;
use crate::metering::{Endpoint, Usage, tokens};
use crate::pricing::{Catalog, Cost};

use super::*;

// === File: JSONL requests through the tokenizer ===

/// A file's tokens, as counted for one model.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct Tally {
    pub(super) requests: u64,
    pub(super) prompt_tokens: u64,
    pub(super) cached_tokens: u64,
    /// An upper bound when `capped_requests > 0`: a max tokens cap counts in full.
    pub(super) output_tokens: u64,
    pub(super) capped_requests: u64,
}

impl Tally {
    pub(super) fn add(&mut self, other: &Self) -> Result<(), EstimateError> {
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
pub(crate) struct Request {
    pub(crate) endpoint: Endpoint,
    pub(crate) body: Value,
}

impl Request {
    pub(crate) fn parse(
        text: &str,
        at: &Place,
        fallback_model: Option<&str>,
    ) -> Result<Self, EstimateError> {
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

    pub(crate) fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Output tokens: the max tokens cap (times `n` choices) or else `default`; capped?
    pub(crate) fn output(&self, default: u64) -> (u64, bool) {
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

pub(super) fn file(
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
        let entry = Some(entry(catalog, model, args, at)?);
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

pub(super) fn file_report(
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
            cache_write_tokens: 0,
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
