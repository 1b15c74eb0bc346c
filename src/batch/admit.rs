//! Batch admission: the input file, fetched from the upstream as a stream and counted
//! line by line with the real tokenizer (on blocking threads, a bounded chunk at a
//! time), priced at batch rates for the budgets, and its prompt tokens checked against
//! the model's enqueued-token limit.

use std::sync::Arc;

use axum::http::HeaderValue;
use futures_util::StreamExt as _;

use super::lines::{Line, LineSplitter};
use super::{Tracker, store};
use crate::error::ApiError;
use crate::estimate::Place;
use crate::estimate::file::Request;
use crate::metering::{Usage, tokens};
use crate::pricing::Cost;
use crate::proxy::Pricer;

/// Input bytes counted per blocking task: big enough to amortise the hand-off, small
/// enough that a 200 MB file never sits in memory.
const CHUNK_BYTES: usize = 1024 * 1024;

/// What a batch's input file holds, as admission counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputTally {
    pub lines: u64,
    /// Lines that are not Batch API requests: skipped here, as the upstream will.
    pub malformed: u64,
    pub prompt_tokens: u64,
    /// The worst case at batch rates: every prompt token uncached, every output token
    /// allowed (the line's max tokens cap, else `budgets.default_max_tokens`).
    pub cost: Cost,
    /// Lines whose model has no price (they add nothing to `cost`).
    pub unpriced: u64,
    /// The model of the first request (a batch file holds one model).
    pub model: Option<String>,
}

impl InputTally {
    fn add(&mut self, other: Self) {
        self.lines += other.lines;
        self.malformed += other.malformed;
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.cost = add(self.cost, other.cost);
        self.unpriced += other.unpriced;
        if self.model.is_none() {
            self.model = other.model;
        }
    }
}

/// Only past ~3·10¹⁴ USD could this saturate; an estimate may not fail on it.
fn add(a: Cost, b: Cost) -> Cost {
    Cost::from_pico(a.as_pico().saturating_add(b.as_pico()))
}

/// Streams `file_id` from the upstream and counts it.
pub(super) async fn count_input(
    tracker: &Tracker,
    pricer: &Arc<Pricer>,
    file_id: &str,
    default_output: u64,
    auth: Option<&HeaderValue>,
) -> Result<InputTally, ApiError> {
    let path = format!("/files/{file_id}/content");
    let upstream = tracker.upstream().map_err(|_| ApiError::NoUpstream {
        model: String::new(),
    })?;
    let unreachable = |error: reqwest::Error| {
        tracing::warn!(%error, file = file_id, "cannot read a batch input file");
        ApiError::UpstreamUnreachable {
            upstream: upstream.name.clone(),
        }
    };
    let response = tracker
        .get(upstream, &path, auth)
        .send()
        .await
        .map_err(unreachable)?;
    match response.status().as_u16() {
        200..=299 => {}
        404 => {
            return Err(ApiError::UnknownObject {
                what: "file",
                id: file_id.to_owned(),
            });
        }
        status => {
            tracing::warn!(
                status,
                file = file_id,
                "the upstream refused a batch input file"
            );
            return Err(ApiError::UpstreamUnreachable {
                upstream: upstream.name.clone(),
            });
        }
    }
    let mut splitter = LineSplitter::new(tracker.config.max_line_bytes, 0, 0);
    let mut tally = InputTally::default();
    let mut chunk: Vec<Line> = Vec::new();
    let mut chunk_bytes = 0;
    let mut body = response.bytes_stream();
    while let Some(bytes) = body.next().await {
        for line in splitter.push(&bytes.map_err(unreachable)?) {
            chunk_bytes += line.text.as_ref().map_or(0, Vec::len);
            chunk.push(line);
        }
        if chunk_bytes >= CHUNK_BYTES {
            tally.add(
                count_off_runtime(std::mem::take(&mut chunk), pricer, file_id, default_output)
                    .await?,
            );
            chunk_bytes = 0;
        }
    }
    chunk.extend(splitter.finish());
    tally.add(count_off_runtime(chunk, pricer, file_id, default_output).await?);
    if tally.malformed > 0 {
        tracker
            .metrics
            .batch_lines
            .with_label_values(&["input_malformed"])
            .inc_by(tally.malformed);
        tracing::warn!(
            file = file_id,
            skipped = tally.malformed,
            lines = tally.lines,
            "batch input lines that are not requests were left out of the estimate"
        );
    }
    Ok(tally)
}

async fn count_off_runtime(
    lines: Vec<Line>,
    pricer: &Arc<Pricer>,
    file_id: &str,
    default_output: u64,
) -> Result<InputTally, ApiError> {
    if lines.is_empty() {
        return Ok(InputTally::default());
    }
    let (pricer, file_id) = (Arc::clone(pricer), file_id.to_owned());
    tokio::task::spawn_blocking(move || count_lines(&lines, &pricer, &file_id, default_output))
        .await
        .map_err(|_| ApiError::Internal)
}

/// Counts lines with the tokenizer. A line that is not a request is skipped, counted
/// and logged with its number.
fn count_lines(lines: &[Line], pricer: &Pricer, file_id: &str, default_output: u64) -> InputTally {
    let mut tally = InputTally::default();
    for line in lines {
        let Some(text) = &line.text else {
            tally.malformed += 1;
            tracing::warn!(
                file = file_id,
                line = line.number,
                "batch input line too long: skipped"
            );
            continue;
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        tally.lines += 1;
        let at = Place {
            path: file_id.into(),
            line: usize::try_from(line.number).unwrap_or(usize::MAX),
        };
        let parsed = std::str::from_utf8(text)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| Request::parse(text, &at, None).map_err(|e| e.to_string()));
        let request = match parsed {
            Ok(request) => request,
            Err(reason) => {
                tally.malformed += 1;
                tracing::warn!(file = file_id, line = line.number, %reason, "batch input line skipped");
                continue;
            }
        };
        let Some(model) = request.model() else {
            tally.malformed += 1;
            tracing::warn!(
                file = file_id,
                line = line.number,
                "batch input line without a model: skipped"
            );
            continue;
        };
        let prompt = tokens::count_prompt(request.endpoint, model, &request.body);
        let (output, _capped) = request.output(default_output);
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: output,
            ..Usage::default()
        };
        tally.prompt_tokens = tally.prompt_tokens.saturating_add(prompt);
        match pricer.estimate_batch(Some(model), &usage) {
            Some(cost) => tally.cost = add(tally.cost, cost),
            None => tally.unpriced += 1,
        }
        if tally.model.is_none() {
            tally.model = Some(model.to_owned());
        }
    }
    tally
}

/// Refuses a batch that would push its model's enqueued tokens over the limit. The
/// batch's own pending row is already counted, so two creates racing each other can
/// both be refused, never both admitted past the limit.
pub(super) async fn check_queue(
    tracker: &Tracker,
    model: &str,
    requested: u64,
) -> Result<(), ApiError> {
    let Some(limit) = tracker.config.enqueued_limit(model) else {
        return Ok(());
    };
    let enqueued: u64 = store::enqueued_by_model(&tracker.store)
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot read enqueued batch tokens");
            ApiError::Internal
        })?
        .into_iter()
        .filter(|(other, _)| {
            tracker.config.enqueued_limit(other).is_some() && same_limit(tracker, model, other)
        })
        .map(|(_, tokens)| tokens)
        .sum();
    if enqueued > limit {
        tracker
            .metrics
            .batch_admissions_refused
            .with_label_values(&["enqueued_tokens"])
            .inc();
        return Err(ApiError::BatchQueueFull {
            model: model.to_owned(),
            limit,
            enqueued: enqueued.saturating_sub(requested),
            requested,
        });
    }
    Ok(())
}

/// Whether two models share one limit entry (the same name, or one glob).
fn same_limit(tracker: &Tracker, a: &str, b: &str) -> bool {
    let entry = |model: &str| {
        let limits = &tracker.config.enqueued_token_limits;
        if limits.contains_key(model) {
            return Some(model.to_owned());
        }
        limits
            .keys()
            .find(|pattern| glob::Pattern::new(pattern).is_ok_and(|g| g.matches(model)))
            .cloned()
    };
    entry(a) == entry(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PricingConfig;
    use crate::metrics::Metrics;
    use crate::pricing::Catalog;

    #[test]
    fn malformed_input_lines_are_skipped_and_the_rest_priced_at_batch_rates() {
        let pricer = Pricer::new(
            Catalog::builtin(),
            &PricingConfig::default(),
            Metrics::new().unwrap(),
        );
        let request = |id: &str| {
            serde_json::json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                         "max_tokens": 1000}})
            .to_string()
            .into_bytes()
        };
        let texts = [
            Some(request("a")),
            Some(b"{not json".to_vec()),
            None,
            Some(b"  ".to_vec()),
            Some(request("b")),
        ];
        let lines: Vec<Line> = texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| Line {
                number: i as u64 + 1,
                end: 0,
                text,
            })
            .collect();
        let tally = count_lines(&lines, &pricer, "file-1", 4096);
        assert_eq!((tally.lines, tally.malformed, tally.unpriced), (3, 2, 0));
        assert_eq!(tally.model.as_deref(), Some("gpt-4o-mini"));
        let prompt = tally.prompt_tokens;
        assert!(prompt > 0);
        // Every prompt token at $0.075/M and 2 × 1,000 output tokens at $0.30/M.
        let expected = Cost::from_pico(u128::from(prompt) * 75_000 + 2_000 * 300_000);
        assert_eq!(tally.cost, expected);
    }
}
