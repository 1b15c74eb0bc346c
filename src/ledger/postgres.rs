//! Postgres, for replicas that share one ledger.

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::pool::{Health, PoolSettings};
use super::{LedgerError, LedgerRow, Then};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    embedded_migrations!("postgres")
}

#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
    health: Health,
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
        Self::lazy_with(url, PoolSettings::default())
    }

    /// As `lazy`, with the pool's figures.
    pub fn lazy_with(url: &str, settings: PoolSettings) -> Result<Self, LedgerError> {
        let pool = PgPoolOptions::new()
            .max_connections(
                settings
                    .max_connections
                    .unwrap_or(PoolSettings::POSTGRES_CONNECTIONS),
            )
            // sqlx's default of 30 s would hold a budget check that long while
            // Postgres is down; 5 s is already generous for a healthy pool.
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy(url)
            .map_err(LedgerError::Connect)?;
        Ok(Self {
            pool,
            health: Health::default(),
        })
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

    pub fn health(&self) -> &Health {
        &self.health
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
        let inserted = async {
            insert_rows!(
                self.pool,
                rows,
                Postgres,
                super::statement::POSTGRES,
                rolled_up_by_triggers,
                then
            )
        }
        .await;
        if inserted.is_ok() {
            self.health.answered();
        }
        inserted
    }
}

/// Postgres's rollups and reservation settling are statement-level triggers over the
/// inserted rows (migrations 0002 and 0005): nothing for the writer to add.
async fn rolled_up_by_triggers<'r>(
    _: &mut sqlx::PgConnection,
    _: impl Iterator<Item = &'r [LedgerRow]>,
    _: &[sqlx::postgres::PgQueryResult],
) -> Result<(), sqlx::Error> {
    Ok(())
}
