//! `[metrics]`: what `/metrics` labels and who may read it.

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Label request, token, cost and budget series with the key's prefix. Each key
    /// multiplies the series count; a fleet of thousands of keys turns this off and
    /// keeps per-team series (per-key spend stays in the ledger and `/admin/spend`).
    pub per_key_labels: bool,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    /// `TOLLGATE_METRICS_TOKEN` overrides it.
    pub bearer_token: Option<Secret>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            per_key_labels: true,
            bearer_token: None,
        }
    }
}
