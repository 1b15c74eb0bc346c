//! `[auth]` and `[budgets]`: who may call, and how spend is capped.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// OpenAI's usage tiers, which keys and teams may name.
pub const BUILTIN_TIERS: [&str; 6] = ["free", "tier-1", "tier-2", "tier-3", "tier-4", "tier-5"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Clients send tollgate keys (`tg-…`); upstream keys stay in tollgate's environment.
    Keys,
    /// Clients send their own upstream key, which is forwarded; spend is attributed to
    /// its fingerprint.
    Passthrough,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// How often each replica checks the database for key and team changes; a
    /// revocation is honoured everywhere within this time.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Keys,
            refresh_interval: Duration::from_millis(500),
        }
    }
}

/// What admission does when the budget store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Admit the request (logged and counted): an outage of the database does not
    /// become an outage of the API.
    FailOpen,
    /// Refuse with 503 until the store answers again.
    FailClosed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Percent of a budget at which the soft alert fires (once per period).
    pub soft_threshold_percent: u8,
    /// Optional URL that receives a JSON POST for each alert (retried in the background).
    pub webhook_url: Option<String>,
    /// Output tokens assumed for a request that sets no max_tokens, when reserving.
    pub default_max_tokens: u64,
    pub on_store_error: StoreFailure,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            soft_threshold_percent: 80,
            webhook_url: None,
            default_max_tokens: 4096,
            on_store_error: StoreFailure::FailOpen,
        }
    }
}
