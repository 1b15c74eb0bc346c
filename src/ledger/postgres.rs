//! Postgres, for replicas that share one ledger.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, SqlSafeStr};

use super::{INSERT_COLUMNS, LedgerError, LedgerRow, power_of_two_chunks};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("requests"),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0001_requests.sql").into_sql_str(),
        false,
    )])
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
        let write_error = |source| LedgerError::Write {
            rows: rows.len(),
            source,
        };
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        for chunk in power_of_two_chunks(rows) {
            let mut query: QueryBuilder<Postgres> =
                QueryBuilder::new(format!("INSERT INTO requests {INSERT_COLUMNS} "));
            query.push_values(chunk, |mut b, row| {
                push_row!(b, row);
            });
            // A replayed row (same id) is skipped, never counted twice.
            query.push(" ON CONFLICT (id) DO NOTHING");
            query.build().execute(&mut *tx).await.map_err(write_error)?;
        }
        tx.commit().await.map_err(write_error)
    }
}
