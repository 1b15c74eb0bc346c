//! Postgres, for replicas that share one ledger.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{LedgerError, LedgerRow, Then};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    embedded_migrations!("postgres")
}

#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
}

impl PostgresLedger {
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        let ledger = Self::lazy(url)?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// A pool that connects on first use: no I/O here, so tollgate can start (and
    /// spill) while Postgres is down.
    pub fn lazy(url: &str) -> Result<Self, LedgerError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // sqlx's default of 30 s would hold a budget check that long while
            // Postgres is down; 5 s is already generous for a healthy pool.
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(LedgerError::Connect)?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), LedgerError> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(LedgerError::Migrate)
    }

    pub fn pool(&self) -> &PgPool {
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
            Postgres,
            "INSERT INTO requests",
            " ON CONFLICT (id) DO NOTHING",
            then
        )
    }
}
