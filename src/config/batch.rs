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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_batch_settings_are_named_by_path() {
        let config = crate::config::Config::from_toml(
            "[batch]\npoll_interval_secs = 0\nlost_after_attempts = 0\nmax_line_bytes = 10\n\
             [batch.enqueued_token_limits]\n\"[x\" = 5\n\"gpt-4o\" = 0\n",
            "t.toml",
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<&str> = problems.paths().collect();
        assert_eq!(
            paths,
            [
                "batch.poll_interval_secs",
                "batch.lost_after_attempts",
                "batch.max_line_bytes",
                "batch.enqueued_token_limits.[x",
                "batch.enqueued_token_limits.gpt-4o",
            ]
        );
        let error = crate::config::Config::from_toml("[batch]\npoll_every = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("poll_every"), "{error}");
    }

    #[test]
    fn an_exact_limit_wins_over_a_glob() {
        let config = BatchConfig {
            enqueued_token_limits: [("gpt-4o*".to_owned(), 10), ("gpt-4o-mini".to_owned(), 5)]
                .into(),
            ..BatchConfig::default()
        };
        assert_eq!(config.enqueued_limit("gpt-4o-mini"), Some(5));
        assert_eq!(config.enqueued_limit("gpt-4o-2024-08-06"), Some(10));
        assert_eq!(config.enqueued_limit("o3"), None);
    }
}
