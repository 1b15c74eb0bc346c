//! `[limits]`: OpenAI-style usage tiers (RPM, TPM, RPD, TPD) enforced per key and model.

use std::collections::BTreeMap;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;
use super::auth::{BUILTIN_TIERS, StoreFailure};

/// Where the limiter's buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackend {
    /// In this process: each replica enforces the limits alone.
    #[default]
    Local,
    /// In Redis, shared by every replica using the same server.
    Redis,
}

/// One set of rate figures; `None` means no limit of that kind, `0` blocks everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateFigures {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
}

impl RateFigures {
    /// `self`, with each figure `over` sets replacing the one here.
    pub fn overlaid(self, over: &RateFigures) -> RateFigures {
        RateFigures {
            rpm: over.rpm.or(self.rpm),
            tpm: over.tpm.or(self.tpm),
            rpd: over.rpd.or(self.rpd),
            tpd: over.tpd.or(self.tpd),
        }
    }

    /// Whether no figure is set: nothing to enforce.
    pub fn is_empty(&self) -> bool {
        *self == RateFigures::default()
    }
}

/// A tier in config: a new name, or figures replacing a built-in tier's field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
    /// Figures for single models (exact names or globs) in this tier.
    pub models: BTreeMap<String, RateFigures>,
    /// Limits across all models of a key on this tier, over `limits.key_total`.
    pub key_total: RateFigures,
    /// Limits across all models and keys of a team on this tier, over
    /// `limits.team_total`.
    pub team_total: RateFigures,
}

impl TierConfig {
    pub fn figures(&self) -> RateFigures {
        RateFigures {
            rpm: self.rpm,
            tpm: self.tpm,
            rpd: self.rpd,
            tpd: self.tpd,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Enforce tiers: per key in keys mode, per caller fingerprint in passthrough mode.
    pub enabled: bool,
    /// The tier of a key whose key and team name none.
    pub default_tier: String,
    /// Output tokens assumed, when charging TPM up front, for a request that sets no
    /// max_completion_tokens / max_tokens. The real usage is charged afterwards.
    pub default_max_tokens: u64,
    /// Requests one key may have in flight at once; unset means no cap.
    pub max_in_flight_per_key: Option<u32>,
    /// Custom tiers, and overrides of the built-in ones.
    pub tiers: BTreeMap<String, TierConfig>,
    /// Figures for single models (exact names or globs), in every tier.
    pub models: BTreeMap<String, RateFigures>,
    /// Limits across all models of one key (on top of its per-model ones), in every
    /// tier; none by default.
    pub key_total: RateFigures,
    /// Limits across all models and all keys of one team, in every tier; none by
    /// default. The team's own tier (not its keys') picks the tier's figures.
    pub team_total: RateFigures,
    /// `local` (per process) or `redis` (shared across replicas).
    pub backend: LimitsBackend,
    /// The Redis server of the `redis` backend.
    pub redis_url: String,
    /// What to do while Redis is unreachable: `fail_open` falls back to the local
    /// limiter, `fail_closed` refuses with 503.
    pub on_redis_error: StoreFailure,
    /// How long one Redis call may take before it counts as a failure.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_tier: "tier-1".to_owned(),
            default_max_tokens: 1024,
            max_in_flight_per_key: None,
            tiers: BTreeMap::new(),
            models: BTreeMap::new(),
            key_total: RateFigures::default(),
            team_total: RateFigures::default(),
            backend: LimitsBackend::Local,
            redis_url: default_redis_url(),
            on_redis_error: StoreFailure::FailOpen,
            redis_timeout: Duration::from_millis(250),
        }
    }
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".to_owned()
}

impl LimitsConfig {
    /// Every tier a key or team may name: the built-in ones, then the custom ones.
    pub fn tier_names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN_TIERS.iter().map(|&t| t.to_owned()).collect();
        for name in self.tiers.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    pub(super) fn validate(&self, problems: &mut Problems) {
        if !self.tier_names().contains(&self.default_tier) {
            problems.push(
                "limits.default_tier",
                format!(
                    "unknown tier `{}`: expected one of {}",
                    self.default_tier,
                    self.tier_names().join(", ")
                ),
            );
        }
        let patterns =
            self.models
                .keys()
                .map(|pattern| (format!("limits.models.{pattern}"), pattern))
                .chain(self.tiers.iter().flat_map(|(tier, config)| {
                    config.models.keys().map(move |pattern| {
                        (format!("limits.tiers.{tier}.models.{pattern}"), pattern)
                    })
                }));
        for (path, pattern) in patterns {
            if let Err(error) = glob::Pattern::new(pattern) {
                problems.push(path, error.to_string());
            }
        }
        for name in self.tiers.keys() {
            if name.trim().is_empty() {
                problems.push("limits.tiers", "a tier name must not be empty");
            }
        }
        match url::Url::parse(&self.redis_url) {
            Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.has_host() => {}
            _ => problems.push(
                "limits.redis_url",
                format!(
                    "`{}` is not a Redis URL: expected redis://HOST[:PORT][/DB]",
                    self.redis_url
                ),
            ),
        }
        if self.redis_timeout.is_zero() {
            problems.push("limits.redis_timeout", "must be greater than 0");
        }
    }
}
