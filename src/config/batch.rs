//! `[batch]`: how tracked batches and fine-tuning jobs are polled and billed, and the
//! optional per-model limit on enqueued batch tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Seconds between polls of a tracked batch or job that is still running.
    pub poll_interval_secs: u64,
    /// After a failed poll the next one waits twice as long as the last, up to this.
    pub max_backoff_secs: u64,
    /// Polls in a row answered 404 before a batch or job is reported lost.
    pub lost_after_attempts: u32,
    /// Longest output (or input) line read; a longer one is malformed and skipped.
    pub max_line_bytes: usize,
    /// Per model (name or glob): the most batch input tokens enqueued at once, counted
    /// from the input files of batches not yet finished. Unset: no limit.
    pub enqueued_token_limits: BTreeMap<String, u64>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            poll_interval_secs: 60,
            max_backoff_secs: 3600,
            lost_after_attempts: 5,
            // Output lines carry whole responses: long completions, logprobs.
            max_line_bytes: 8 * 1024 * 1024,
            enqueued_token_limits: BTreeMap::new(),
        }
    }
}

impl BatchConfig {
    pub(super) fn validate(&self, problems: &mut Problems) {
        if self.poll_interval_secs == 0 {
            problems.push("batch.poll_interval_secs", "must be greater than 0");
        }
        if self.max_backoff_secs < self.poll_interval_secs {
            problems.push(
                "batch.max_backoff_secs",
                "must be at least batch.poll_interval_secs",
            );
        }
        if self.lost_after_attempts == 0 {
            problems.push("batch.lost_after_attempts", "must be greater than 0");
        }
        if self.max_line_bytes < 1024 {
            problems.push("batch.max_line_bytes", "must be at least 1024");
        }
        for (pattern, limit) in &self.enqueued_token_limits {
            let at = format!("batch.enqueued_token_limits.{pattern}");
            if let Err(error) = glob::Pattern::new(pattern) {
                problems.push(at, error.to_string());
            } else if *limit == 0 {
                problems.push(at, "must be greater than 0");
            }
        }
    }

    /// The enqueued-token limit of `model`: an exact name wins over a glob.
    pub fn enqueued_limit(&self, model: &str) -> Option<u64> {
        self.enqueued_token_limits.get(model).copied().or_else(|| {
            self.enqueued_token_limits
                .iter()
                .find(|(pattern, _)| glob::Pattern::new(pattern).is_ok_and(|g| g.matches(model)))
                .map(|(_, limit)| *limit)
        })
    }
}
