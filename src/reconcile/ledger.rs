//! The tollgate side: the ledger's rows on OpenAI's bill, summed per UTC day, model,
//! price variant, usage source and kind, in the database.
//!
//! Which rows: those of the named upstreams (the ones that are OpenAI) in the range,
//! except requests OpenAI answered with an error (`upstream_error`: not billed) or never
//! received (`upstream_unreachable`). Streams cut off, timed out or left by their
//! client stay in: OpenAI bills what it generated.
//!
//! Why the `requests` table and not the rollups: `spend_daily` has neither the
//! upstream nor the usage source, and both decide what is compared. The statement is
//! one range scan on `requests_ts`, grouped in the database, so what comes back is a
//! few rows per day and model however many requests there were (bench/README.md,
//! "Reconciliation").

use super::Days;
use crate::ledger::{LedgerError, Store};
use crate::pricing::Cost;

const DAY_MS: i64 = 86_400_000;

/// One group of ledger rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerGroup {
    /// Days since the Unix epoch.
    pub day: i64,
    /// The catalog entry the rows were priced at, else the model as answered or asked.
    pub model: String,
    /// `standard`, `batch`, `fine_tuned`, `fine_tuned_batch`; empty when unpriced.
    pub variant: String,
    /// The usage was counted by tollgate (`estimated`), not reported by OpenAI.
    pub estimated: bool,
    /// `realtime`, `batch` or `training`.
    pub kind: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub cost: Cost,
    /// Rows without a price (cost unknown, not zero).
    pub unpriced: u64,
}

/// The groups of `days`, for rows of `upstreams`.
pub async fn read(
    store: &Store,
    days: Days,
    upstreams: &[String],
) -> Result<Vec<LedgerGroup>, LedgerError> {
    let places = vec!["?"; upstreams.len()].join(", ");
    // Postgres sums BIGINT into NUMERIC: cast back so both backends decode i64. Cost is
    // summed as whole micro-USD plus pico remainders so no 64-bit sum can overflow.
    let sql = store.sql(&format!(
        "SELECT ts_ms - ts_ms % {DAY_MS} AS day_ms, \
         coalesce(priced_model, model_answered, model_requested, '') AS model, \
         coalesce(price_variant, '') AS variant, usage_source AS source, kind, \
         count(*) AS requests, \
         CAST(sum(prompt_tokens) AS BIGINT) AS input, \
         CAST(sum(cached_tokens) AS BIGINT) AS cached, \
         CAST(sum(completion_tokens) AS BIGINT) AS output, \
         CAST(coalesce(sum(cost_pico / 1000000), 0) AS BIGINT) AS cost_micros, \
         CAST(coalesce(sum(cost_pico % 1000000), 0) AS BIGINT) AS cost_rem, \
         count(*) - count(cost_pico) AS unpriced \
         FROM requests \
         WHERE ts_ms >= ? AND ts_ms < ? AND upstream IN ({places}) \
         AND outcome NOT IN ('upstream_error', 'upstream_unreachable') \
         GROUP BY day_ms, model, variant, source, kind"
    ));
    macro_rules! run {
        ($pool:expr) => {{
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(days.start_ms())
                .bind(days.end_ms());
            for upstream in upstreams {
                query = query.bind(upstream.as_str());
            }
            let rows = query.fetch_all($pool).await.map_err(LedgerError::Read)?;
            rows.iter().map(group).collect()
        }};
    }
    match store {
        Store::Sqlite(ledger) => run!(ledger.pool()),
        Store::Postgres(ledger) => run!(ledger.pool()),
    }
}

fn group<R>(row: &R) -> Result<LedgerGroup, LedgerError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let int = |column: &str| -> Result<i64, LedgerError> {
        row.try_get(column).map_err(LedgerError::Read)
    };
    let count = |column: &str| int(column).map(|n| u64::try_from(n).unwrap_or(0));
    let text = |column: &str| -> Result<String, LedgerError> {
        row.try_get(column).map_err(LedgerError::Read)
    };
    let micros = u128::from(count("cost_micros")?);
    let remainder = u128::from(count("cost_rem")?);
    Ok(LedgerGroup {
        day: int("day_ms")?.div_euclid(DAY_MS),
        model: text("model")?,
        variant: text("variant")?,
        estimated: text("source")? == "estimated",
        kind: text("kind")?,
        requests: count("requests")?,
        input_tokens: count("input")?,
        cached_tokens: count("cached")?,
        output_tokens: count("output")?,
        cost: Cost::from_pico(micros * 1_000_000 + remainder),
        unpriced: count("unpriced")?,
    })
}
