//! A finished batch's output file, streamed line by line into ledger rows at batch
//! prices. Constant memory: one bounded line and one chunk of rows at a time. Exact
//! across restarts: each line's row id is derived from the batch and its `custom_id`,
//! so a replayed line is skipped by the ledger; the cursor, committed with each chunk
//! of rows, only spares the re-read.

use axum::http::{HeaderValue, StatusCode, header};
use futures_util::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::lines::{Line, LineSplitter};
use super::store::{ADVANCE, Cursor, Tracked, advance_binds};
use super::{BatchError, Tracker};
use crate::clock::now_ms;
use crate::ledger::{Kind, LedgerRow, Outcome, Then};
use crate::metering::usage::RawUsage;
use crate::metering::{Endpoint, Usage, UsageSource};

/// Rows per transaction; the cursor moves with each.
const ROWS_PER_COMMIT: usize = 256;
/// Lines read without a row (failed or malformed ones) before the cursor moves anyway.
const LINES_PER_COMMIT: u64 = 1024;
/// Skipped lines logged one by one per pass; past that only counted.
const LOGGED_SKIPS: u64 = 20;

/// What billing one output file came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillOutcome {
    pub cursor: Cursor,
    /// Whether the read resumed at the cursor's byte offset (a `206` to its range).
    pub resumed: bool,
}

/// One output line, as far as billing reads it.
#[derive(Deserialize)]
struct OutputLine {
    custom_id: Option<String>,
    response: Option<OutputResponse>,
}

#[derive(Deserialize)]
struct OutputResponse {
    status_code: u16,
    request_id: Option<String>,
    body: Option<OutputBody>,
}

#[derive(Deserialize)]
struct OutputBody {
    model: Option<String>,
    usage: Option<RawUsage>,
}

/// What a line is worth.
enum Verdict {
    Billable {
        custom_id: String,
        request_id: Option<String>,
        model: Option<String>,
        usage: Usage,
    },
    /// The request failed upstream: OpenAI does not bill it.
    Failed,
    Malformed(&'static str),
}

fn judge(text: &[u8]) -> Verdict {
    let Ok(line) = serde_json::from_slice::<OutputLine>(text) else {
        return Verdict::Malformed("not a JSON batch output line");
    };
    let Some(custom_id) = line.custom_id else {
        return Verdict::Malformed("no custom_id");
    };
    let Some(response) = line.response else {
        return Verdict::Failed;
    };
    if response.status_code != 200 {
        return Verdict::Failed;
    }
    let Some(body) = response.body else {
        return Verdict::Malformed("a 200 response without a body");
    };
    let Some(usage) = body.usage else {
        return Verdict::Malformed("a 200 response without usage");
    };
    Verdict::Billable {
        custom_id,
        request_id: response.request_id,
        model: body.model,
        usage: usage.to_usage(),
    }
}

/// The ledger id of a batch line: the same on every read of the file.
pub fn line_row_id(batch_id: &str, custom_id: &str) -> String {
    let digest = Sha256::digest(custom_id.as_bytes());
    format!("batch:{batch_id}:{}", hex::encode(&digest[..16]))
}

/// Reads `file_id` from where `tracked`'s cursor stands and bills every successful
/// line not billed yet.
pub async fn bill_output(
    tracker: &Tracker,
    tracked: &Tracked,
    file_id: &str,
    ts_ms: i64,
    auth: Option<&HeaderValue>,
) -> Result<BillOutcome, BatchError> {
    Biller::new(tracker, tracked, ts_ms)
        .run(file_id, auth)
        .await
}

struct Biller<'a> {
    tracker: &'a Tracker,
    tracked: &'a Tracked,
    ts_ms: i64,
    upstream_name: String,
    endpoint: String,
    cursor: Cursor,
    /// Lines up to this number were counted before (a read that restarted at byte 0).
    skip_to: u64,
    rows: Vec<LedgerRow>,
    uncommitted: u64,
    skips_logged: u64,
}

impl<'a> Biller<'a> {
    fn new(tracker: &'a Tracker, tracked: &'a Tracked, ts_ms: i64) -> Self {
        let endpoint = tracked.endpoint.as_deref().unwrap_or_default();
        let endpoint = endpoint
            .strip_prefix("/v1")
            .and_then(Endpoint::from_path)
            .map_or_else(|| endpoint.to_owned(), |e| e.as_str().to_owned());
        Self {
            tracker,
            tracked,
            ts_ms,
            upstream_name: String::new(),
            endpoint,
            cursor: Cursor::of(tracked),
            skip_to: 0,
            rows: Vec::with_capacity(ROWS_PER_COMMIT),
            uncommitted: 0,
            skips_logged: 0,
        }
    }

    async fn run(
        mut self,
        file_id: &str,
        auth: Option<&HeaderValue>,
    ) -> Result<BillOutcome, BatchError> {
        let path = format!("/files/{file_id}/content");
        let upstream = self.tracker.upstream()?;
        self.upstream_name.clone_from(&upstream.name);
        let mut request = self.tracker.get(upstream, &path, auth);
        if self.cursor.bytes > 0 {
            request = request.header(header::RANGE, format!("bytes={}-", self.cursor.bytes));
        }
        let unreachable = |source| BatchError::Unreachable {
            path: path.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BatchError::Status {
                path,
                status: status.as_u16(),
            });
        }
        // An upstream that ignores the range sends the whole file: read it from the
        // start and skip the lines the cursor already counted.
        let resumed = status == StatusCode::PARTIAL_CONTENT;
        let max = self.tracker.config.max_line_bytes;
        let mut splitter = if resumed {
            LineSplitter::new(max, self.cursor.lines, self.cursor.bytes)
        } else {
            self.skip_to = self.cursor.lines;
            LineSplitter::new(max, 0, 0)
        };
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(unreachable)?;
            for line in splitter.push(&chunk) {
                self.take(line).await?;
            }
        }
        if let Some(line) = splitter.finish() {
            self.take(line).await?;
        }
        self.commit().await?;
        Ok(BillOutcome {
            cursor: self.cursor,
            resumed,
        })
    }

    async fn take(&mut self, line: Line) -> Result<(), BatchError> {
        if line.number <= self.skip_to {
            return Ok(());
        }
        self.cursor.lines = line.number;
        self.cursor.bytes = line.end;
        self.uncommitted += 1;
        let verdict = match &line.text {
            None => Some(Verdict::Malformed("longer than batch.max_line_bytes")),
            Some(text) if text.iter().all(u8::is_ascii_whitespace) => None,
            Some(text) => Some(judge(text)),
        };
        let metrics = &self.tracker.metrics;
        match verdict {
            None => {}
            Some(Verdict::Billable {
                custom_id,
                request_id,
                model,
                usage,
            }) => {
                self.cursor.billed += 1;
                metrics.batch_lines.with_label_values(&["billed"]).inc();
                let row = self.row(&custom_id, request_id, model, usage);
                self.rows.push(row);
            }
            Some(Verdict::Failed) => {
                self.cursor.failed += 1;
                metrics.batch_lines.with_label_values(&["failed"]).inc();
            }
            Some(Verdict::Malformed(reason)) => {
                self.cursor.malformed += 1;
                metrics.batch_lines.with_label_values(&["malformed"]).inc();
                self.skips_logged += 1;
                if self.skips_logged <= LOGGED_SKIPS {
                    tracing::warn!(
                        batch = %self.tracked.id,
                        line = line.number,
                        reason,
                        "batch output line skipped: not billed"
                    );
                }
            }
        }
        if self.rows.len() >= ROWS_PER_COMMIT || self.uncommitted >= LINES_PER_COMMIT {
            self.commit().await?;
        }
        Ok(())
    }

    fn row(
        &self,
        custom_id: &str,
        request_id: Option<String>,
        model: Option<String>,
        usage: Usage,
    ) -> LedgerRow {
        let tracked = self.tracked;
        let price =
            self.tracker
                .pricer
                .price_batch(model.as_deref(), tracked.model.as_deref(), &usage);
        if let Some(price) = &price {
            self.tracker
                .metrics
                .job_spend
                .cell(&["batch"])
                .add(price.cost);
        }
        LedgerRow {
            id: line_row_id(&tracked.id, custom_id),
            request_id: custom_id.to_owned(),
            upstream_request_id: request_id,
            ts_ms: self.ts_ms,
            caller: tracked.caller.clone(),
            upstream: self.upstream_name.clone(),
            endpoint: self.endpoint.clone(),
            model_requested: tracked.model.clone(),
            model_answered: model,
            service_tier_requested: None,
            service_tier: None,
            streamed: false,
            usage,
            usage_source: UsageSource::Upstream,
            status: 200,
            outcome: Outcome::Ok,
            latency_ms: 0,
            ttfb_ms: None,
            price,
            key_id: Some(tracked.key_id.clone()),
            team_id: tracked.team_id.clone(),
            kind: Kind::Batch,
            route: crate::ledger::RowRoute::default(),
            provider: "openai".to_owned(),
            tokenizer: None,
        }
    }

    /// The chunk's rows and the cursor past them, in one transaction.
    async fn commit(&mut self) -> Result<(), BatchError> {
        let binds = advance_binds(&self.cursor, now_ms(), &self.tracked.id);
        let then = Then {
            sql: ADVANCE,
            binds: &binds,
        };
        self.tracker.store.insert_then(&self.rows, &then).await?;
        self.rows.clear();
        self.uncommitted = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_judged_by_status_and_usage() {
        let ok = br#"{"id":"r1","custom_id":"a","response":{"status_code":200,"request_id":"q","body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":40,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":32}}}},"error":null}"#;
        match judge(ok) {
            Verdict::Billable {
                custom_id, usage, ..
            } => {
                assert_eq!(custom_id, "a");
                assert_eq!(
                    (
                        usage.prompt_tokens,
                        usage.cached_tokens,
                        usage.completion_tokens
                    ),
                    (40, 32, 12)
                );
            }
            _ => panic!("billable"),
        }
        let failed = br#"{"custom_id":"b","response":{"status_code":400,"body":{"error":{}}}}"#;
        assert!(matches!(judge(failed), Verdict::Failed));
        let transport = br#"{"custom_id":"c","response":null,"error":{"code":"x","message":"y"}}"#;
        assert!(matches!(judge(transport), Verdict::Failed));
        for bad in [
            &b"{not json"[..],
            br#"{"response":{"status_code":200,"body":{"usage":{}}}}"#,
            br#"{"custom_id":"d","response":{"status_code":200,"body":{"model":"m"}}}"#,
            br#"[1,2]"#,
        ] {
            assert!(matches!(judge(bad), Verdict::Malformed(_)));
        }
    }

    #[test]
    fn line_ids_are_stable_and_distinct() {
        assert_eq!(line_row_id("batch_1", "a"), line_row_id("batch_1", "a"));
        assert_ne!(line_row_id("batch_1", "a"), line_row_id("batch_1", "b"));
        assert_ne!(line_row_id("batch_1", "a"), line_row_id("batch_2", "a"));
    }
}
