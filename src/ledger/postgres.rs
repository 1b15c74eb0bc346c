//! Postgres, for replicas that share one ledger.

use std::borrow::Cow;

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
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(LedgerError::Connect)?;
        migrator().run(&pool).await.map_err(LedgerError::Migrate)?;
        Ok(Self { pool })
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
