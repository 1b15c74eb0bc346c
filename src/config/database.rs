//! `[database]` and `[ledger]`: where spend is written and how the writer batches.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing, WAL mode) or `postgres://…`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://tollgate.db".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Rows waiting for the writer. When full, recording tasks wait (clients never do).
    pub queue_capacity: usize,
    /// Most rows written in one transaction.
    pub batch_size: usize,
    /// How long the writer waits for a batch to fill before writing what it has. Rows
    /// reach the database at most this much later; clients never wait for it.
    #[serde(with = "humantime_serde")]
    pub max_batch_delay: std::time::Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_size: 512,
            max_batch_delay: std::time::Duration::from_millis(50),
        }
    }
}
