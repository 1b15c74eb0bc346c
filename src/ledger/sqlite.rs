//! The embedded default: a SQLite file in WAL mode.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection as _, Sqlite};

use super::background;
use super::pool::{Health, PoolSettings};
use super::{LedgerError, LedgerRow, Then};

/// The migrations, embedded so the binary needs no files beside it.
fn migrator() -> Migrator {
    embedded_migrations!("sqlite")
}

#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
    /// The writer's own connection, on a thread of the least priority: see
    /// `ledger::background`. Only the writer's copy of the store has one.
    background: Option<SqlitePool>,
    health: Health,
}

impl SqliteLedger {
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        let ledger = Self::lazy(url)?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// A pool that connects on first use: no I/O here.
    pub fn lazy(url: &str) -> Result<Self, LedgerError> {
        Self::lazy_with(url, PoolSettings::default())
    }

    /// As `lazy`, with the pool's figures. A connection waits for SQLite's write lock
    /// as long as a caller waits for a connection.
    pub fn lazy_with(url: &str, settings: PoolSettings) -> Result<Self, LedgerError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(LedgerError::Connect)?
            .create_if_missing(true)
            // WAL lets reports read while the writer writes; NORMAL is durable across
            // process crashes in WAL mode, which is the failure the ledger guards against.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.acquire_timeout);
        let connections = settings
            .max_connections
            .unwrap_or(PoolSettings::SQLITE_CONNECTIONS);
        let pool = pool_options(connections, settings.acquire_timeout).connect_lazy_with(options);
        Ok(Self {
            pool,
            background: None,
            health: Health::default(),
        })
    }

    /// This ledger with a connection of its own for the writer's batches, whose SQLite
    /// thread runs at the least priority. Connects on first use, as the pool does.
    pub fn with_background_writer(self) -> Self {
        let options = (*self.pool.connect_options())
            .clone()
            .thread_name(|_| background::THREAD_NAME.to_owned());
        let pool = pool_options(1, self.pool.options().get_acquire_timeout())
            // The pool replaces a connection it closed (one that failed a write) with a
            // new one, on a new thread: each is lowered as it connects.
            .after_connect(|_, _| {
                Box::pin(async {
                    if let Err(error) = background::lower_writer_threads() {
                        tracing::warn!(
                            %error,
                            "cannot lower the ledger writer's thread priority: it keeps the process's"
                        );
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Self {
            background: Some(pool),
            ..self
        }
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

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Adds the rows with rowids `first..=last` to the rollups, as the writer does for
    /// each batch it inserts: for rows that reached `requests` another way (a bulk
    /// `INSERT … SELECT`, such as the spend-report bench's seed).
    pub async fn roll_up_rowids(&self, first: i64, last: i64) -> Result<(), LedgerError> {
        let write_error = |source| LedgerError::Write { rows: 0, source };
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        super::sqlite_rollup::roll_up_rowids(&mut tx, first, last)
            .await
            .map_err(write_error)?;
        tx.commit().await.map_err(write_error)
    }

    pub async fn insert(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        self.insert_then(rows, None).await
    }

    pub async fn insert_then(
        &self,
        rows: &[LedgerRow],
        then: Option<&Then<'_>>,
    ) -> Result<(), LedgerError> {
        self.insert_on(&self.pool, rows, then).await
    }

    /// As `insert`, through the background connection when there is one.
    pub async fn insert_in_background(&self, rows: &[LedgerRow]) -> Result<(), LedgerError> {
        let pool = self.background.as_ref().unwrap_or(&self.pool);
        self.insert_on(pool, rows, None).await
    }

    async fn insert_on(
        &self,
        pool: &SqlitePool,
        rows: &[LedgerRow],
        then: Option<&Then<'_>>,
    ) -> Result<(), LedgerError> {
        let mut connection = pool.acquire().await.map_err(|source| LedgerError::Write {
            rows: rows.len(),
            source,
        })?;
        // A replayed row (same id) is skipped, never counted twice. In a block of its
        // own, so a failure at any step (not only the commit) reaches the check below.
        let inserted = async {
            insert_rows!(
                connection,
                rows,
                Sqlite,
                super::statement::SQLITE,
                super::sqlite_rollup::roll_up,
                then
            )
        }
        .await;
        // A connection that failed a write is not trusted with the next one: beside the
        // case `after_release` catches, SQLite opens a file it may not write read-only,
        // and such a connection would refuse every write after the file is writable.
        match &inserted {
            Ok(()) => self.health.answered(),
            Err(_) => connection.close_on_drop(),
        }
        inserted
    }
}

/// The pool's settings, shared by the writer's background connection. After a write
/// fails with an I/O error, sqlx can lose track of the connection's transaction (its
/// ROLLBACK fails, and it still counts one open): the connection's next begin() is then
/// a SAVEPOINT whose "commit" reports success, stores nothing and leaves the write lock
/// held (seen with the ledger file made unwritable). Such a connection is closed
/// instead of going back to the pool.
fn pool_options(connections: u32, acquire_timeout: std::time::Duration) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(acquire_timeout)
        .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
}
