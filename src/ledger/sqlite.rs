//! The embedded default: a SQLite file in WAL mode.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{LedgerError, LedgerRow, Then};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    embedded_migrations!("sqlite")
}

/// How long a caller waits for a connection before the database counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        let ledger = Self::lazy(url)?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// A pool that connects on first use: no I/O here.
    pub fn lazy(url: &str) -> Result<Self, LedgerError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(LedgerError::Connect)?
            .create_if_missing(true)
            // WAL lets reports read while the writer writes; NORMAL is durable across
            // process crashes in WAL mode, which is the failure the ledger guards against.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), LedgerError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(LedgerError::Migrate)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        self.insert_then(rows, None).await
    }

    pub async fn insert_then(
        &self,
        rows: &[LedgerRow],
        then: Option<&Then<'_>>,
    ) -> Result<(), LedgerError> {
        // A replayed row (same id) is skipped, never counted twice.
        insert_rows!(
            self.pool,
            rows,
            Sqlite,
            "INSERT OR IGNORE INTO requests",
            "",
            then
        )
    }
}
