//! Postgres, for replicas that share one ledger.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, SqlSafeStr};

use super::{LedgerError, LedgerRow};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("requests"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0001_requests.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("keys_teams_budgets"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0002_keys_teams_budgets.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("spend_daily"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0003_spend_daily.sql").into_sql_str(),
            false,
        ),
    ])
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
        // A replayed row (same id) is skipped, never counted twice.
        insert_rows!(
            self.pool,
            rows,
            Postgres,
            "INSERT INTO requests",
            " ON CONFLICT (id) DO NOTHING"
        )
    }
}
