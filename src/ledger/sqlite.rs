//! The embedded default: a SQLite file in WAL mode.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, SqlSafeStr, Sqlite};

use super::{LedgerError, LedgerRow};
use crate::pricing::{Rate, UnitRates};

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

// SQLite caps bound parameters per statement at 32766; 25 columns a row.
const ROWS_PER_STATEMENT: usize = 256;

/// Splits rows into statements of 256, 128, …, 1 rows. sqlx caches one prepared
/// statement per distinct SQL text, so a batch of any size reuses at most nine shapes
/// instead of preparing (and caching) a new one per batch size.
fn power_of_two_chunks(rows: &[LedgerRow]) -> impl Iterator<Item = &[LedgerRow]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
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
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR IGNORE INTO requests (id, request_id, upstream_request_id, ts_ms, caller, \
                 upstream, endpoint, model_requested, model_answered, streamed, prompt_tokens, \
                 cached_tokens, completion_tokens, reasoning_tokens, usage_source, status, outcome, \
                 latency_ms, ttfb_ms, cost_pico, priced_model, price_variant, input_rate, \
                 cached_input_rate, output_rate) ",
            );
            query.push_values(chunk, |mut b, row| {
                b.push_bind(&row.id)
                    .push_bind(&row.request_id)
                    .push_bind(&row.upstream_request_id)
                    .push_bind(row.ts_ms)
                    .push_bind(&row.caller)
                    .push_bind(&row.upstream)
                    .push_bind(&row.endpoint)
                    .push_bind(&row.model_requested)
                    .push_bind(&row.model_answered)
                    .push_bind(row.streamed)
                    .push_bind(to_i64(row.usage.prompt_tokens))
                    .push_bind(to_i64(row.usage.cached_tokens))
                    .push_bind(to_i64(row.usage.completion_tokens))
                    .push_bind(to_i64(row.usage.reasoning_tokens))
                    .push_bind(row.usage_source.as_str())
                    .push_bind(i64::from(row.status))
                    .push_bind(row.outcome.as_str())
                    .push_bind(to_i64(row.latency_ms))
                    .push_bind(row.ttfb_ms.map(to_i64));
                let price = row.price.as_ref();
                let rate = |pick: fn(&UnitRates) -> Rate| {
                    price.map(|p| to_i64(pick(&p.rates).micros_per_million()))
                };
                b.push_bind(price.map(|p| i64::try_from(p.cost.as_pico()).unwrap_or(i64::MAX)))
                    .push_bind(price.map(|p| p.model.clone()))
                    .push_bind(price.map(|p| p.variant.as_str()))
                    .push_bind(rate(|r| r.input))
                    .push_bind(rate(|r| r.cached_input))
                    .push_bind(rate(|r| r.output));
            });
            query.build().execute(&mut *tx).await.map_err(write_error)?;
        }
        tx.commit().await.map_err(write_error)
    }
}

// Token counts and milliseconds never approach i64::MAX; saturate rather than wrap.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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
