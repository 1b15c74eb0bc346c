//! `[database]` and `[ledger]`: where spend is written, how the writer batches, and
//! where rows wait while the database is unreachable.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing, WAL mode) or `postgres://…`.
    pub url: String,
    /// Connections per process; unset: 4 for SQLite, 8 for Postgres.
    pub max_connections: Option<u32>,
    /// Longest wait for a pooled connection, and for the locks a budget check takes.
    /// A budget check that runs out of it while the database still answers gets a
    /// 503 `budget_store_busy`; see `budgets.on_store_error` for a database that is down.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let pool = PoolSettings::default();
        Self {
            url: "sqlite://tollgate.db".to_owned(),
            max_connections: pool.max_connections,
            acquire_timeout: pool.acquire_timeout,
        }
    }
}

impl DatabaseConfig {
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
        }
    }
}

/// Pool figures, from `[database]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections in the pool; `None` takes the backend's default.
    pub max_connections: Option<u32>,
    /// Longest wait for a connection, and (budget checks) for a lock.
    pub acquire_timeout: Duration,
}

impl PoolSettings {
    pub const SQLITE_CONNECTIONS: u32 = 4;
    pub const POSTGRES_CONNECTIONS: u32 = 8;
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
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
    pub max_batch_delay: Duration,
    /// Where batches the database refused are appended (fsync'd), to be replayed once
    /// it answers again. Relative paths are from the working directory.
    pub spill_dir: PathBuf,
    /// How often the spill is offered to the database: a ping, then a replay.
    #[serde(with = "humantime_serde")]
    pub spill_retry_interval: Duration,
    /// The scheduling priority of the writer's SQLite work while it keeps up.
    /// `Normal` by default: `Background` trades the kill -9 loss window for the p99.
    pub writer_priority: WriterPriority,
}

/// Whose turn it is on a busy core: the proxy's requests or the ledger's inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterPriority {
    /// SQLite: batches go through a connection of their own whose thread runs at the
    /// lowest priority (Linux's nice 19), so a request never waits behind an insert on
    /// a shared core; a full batch (the writer is behind) goes through the shared pool
    /// at normal priority, so the queue cannot grow without end. On a core kept busy at
    /// a modest request rate the short batches wait for spare time, so rows reach the
    /// database later and a kill -9 loses more of them (the fault suite's window: 29–59
    /// ms normal, 117–391 ms background). No effect on Postgres, whose work happens in
    /// the server, or off Linux.
    Background,
    /// Every batch through the shared pool, at the process's priority.
    Normal,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_size: 512,
            max_batch_delay: Duration::from_millis(50),
            spill_dir: PathBuf::from("tollgate-spill"),
            spill_retry_interval: Duration::from_secs(1),
            writer_priority: WriterPriority::Normal,
        }
    }
}
