//! The embedded default: a SQLite file in WAL mode.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, SqlSafeStr, Sqlite};

use super::{INSERT_COLUMNS, LedgerError, LedgerRow, power_of_two_chunks};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("requests"),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_requests.sql").into_sql_str(),
        false,
    )])
}

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
}

impl SqliteLedger {
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
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
            .connect_with(options)
            .await
            .map_err(LedgerError::Connect)?;
        migrator().run(&pool).await.map_err(LedgerError::Migrate)?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        let write_error = |source| LedgerError::Write {
            rows: rows.len(),
            source,
        };
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        for chunk in power_of_two_chunks(rows) {
            let mut query: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT OR IGNORE INTO requests {INSERT_COLUMNS} "));
            query.push_values(chunk, |mut b, row| {
                push_row!(b, row);
            });
            query.build().execute(&mut *tx).await.map_err(write_error)?;
        }
        tx.commit().await.map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_power_of_two_statements() {
        let sizes = |n: usize| -> Vec<usize> {
            let rows: Vec<LedgerRow> = (0..n).map(|_| sample()).collect();
            power_of_two_chunks(&rows).map(<[LedgerRow]>::len).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(600), [256, 256, 64, 16, 8]);
    }

    fn sample() -> LedgerRow {
        LedgerRow {
            id: String::new(),
            request_id: String::new(),
            upstream_request_id: None,
            ts_ms: 0,
            caller: String::new(),
            upstream: String::new(),
            endpoint: String::new(),
            model_requested: None,
            model_answered: None,
            streamed: false,
            usage: crate::metering::Usage::default(),
            usage_source: crate::metering::UsageSource::Upstream,
            status: 200,
            outcome: super::super::Outcome::Ok,
            latency_ms: 0,
            ttfb_ms: None,
            price: None,
        }
    }
}
