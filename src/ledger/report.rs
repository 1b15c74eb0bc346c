//! Reading the ledger back: spend by group (with a what-if re-pricing at another model's
//! prices), and filling in the cost of rows recorded before their model had a price.

use std::fmt::Write as _;

use serde::Serialize;

use super::{LedgerError, Store};
use crate::metering::Usage;
use crate::pricing::{Catalog, Cost, UnitRates, Variant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Caller,
    Model,
    Day,
}

impl Group {
    fn sql(self, store: &Store) -> &'static str {
        match (self, store) {
            (Self::Caller, _) => "caller",
            (Self::Model, _) => "coalesce(priced_model, model_answered, model_requested, '')",
            (Self::Day, Store::Sqlite(_)) => "date(ts_ms / 1000, 'unixepoch')",
            (Self::Day, Store::Postgres(_)) => {
                "to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
        }
    }
}

/// Reads a count column of either backend as u64 (negative never happens; 0 if so).
fn count<R>(row: &R, column: &str) -> Result<u64, LedgerError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let value: i64 = row.try_get(column).map_err(LedgerError::Read)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

fn spend_line<R>(row: &R, what_if: Option<UnitRates>) -> Result<SpendLine, LedgerError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let usage = Usage {
        prompt_tokens: count(row, "prompt")?,
        cached_tokens: count(row, "cached")?,
        completion_tokens: count(row, "completion")?,
        reasoning_tokens: count(row, "reasoning")?,
        cache_write_tokens: 0,
    };
    Ok(SpendLine {
        group: row.try_get("grp").map_err(LedgerError::Read)?,
        requests: count(row, "requests")?,
        prompt_tokens: usage.prompt_tokens,
        cached_tokens: usage.cached_tokens,
        completion_tokens: usage.completion_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        cost_usd: Cost::from_pico(u128::from(count(row, "cost")?)),
        unpriced_requests: count(row, "unpriced")?,
        unpriced_tokens: count(row, "unpriced_tokens")?,
        what_if_usd: what_if.map(|rates| rates.cost(&usage)),
    })
}

/// One group's totals. Unpriced rows are counted apart, never folded in as $0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpendLine {
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: Cost,
    pub unpriced_requests: u64,
    pub unpriced_tokens: u64,
    /// The same tokens at the what-if model's prices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what_if_usd: Option<Cost>,
}

/// Spend since `since_ms` (Unix ms), grouped; shadow comparisons are not spend and are
/// left out (see `shadow`). With `what_if`, every row's tokens are
/// also priced at that model's standard rates: cost is linear in the token sums, so
/// pricing the sums is exact.
pub async fn spend(
    store: &Store,
    since_ms: i64,
    group: Group,
    what_if: Option<UnitRates>,
) -> Result<Vec<SpendLine>, LedgerError> {
    // Postgres sums BIGINT into NUMERIC; cast back so both backends decode i64.
    let sql = format!(
        "SELECT {g} AS grp, count(*) AS requests, CAST(sum(prompt_tokens) AS BIGINT) AS prompt, \
         CAST(sum(cached_tokens) AS BIGINT) AS cached, \
         CAST(sum(completion_tokens) AS BIGINT) AS completion, \
         CAST(sum(reasoning_tokens) AS BIGINT) AS reasoning, \
         CAST(coalesce(sum(cost_pico), 0) AS BIGINT) AS cost, \
         count(*) - count(cost_pico) AS unpriced, \
         CAST(coalesce(sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens END), 0) AS BIGINT) \
         AS unpriced_tokens FROM requests WHERE ts_ms >= {p} AND kind <> 'shadow' \
         GROUP BY grp ORDER BY grp",
        g = group.sql(store),
        p = placeholder(store, 1),
    );
    let query = sqlx::AssertSqlSafe(sql);
    // The same steps on either pool; only the row type differs.
    macro_rules! spend_in {
        ($pool:expr) => {
            sqlx::query(query)
                .bind(since_ms)
                .fetch_all($pool)
                .await
                .map_err(LedgerError::Read)?
                .iter()
                .map(|row| spend_line(row, what_if))
                .collect()
        };
    }
    match store {
        Store::Sqlite(ledger) => spend_in!(ledger.pool()),
        Store::Postgres(ledger) => spend_in!(ledger.pool()),
    }
}

/// The n-th bind parameter in the backend's syntax.
fn placeholder(store: &Store, n: usize) -> String {
    match store {
        Store::Sqlite(_) => "?".to_owned(),
        Store::Postgres(_) => format!("${n}"),
    }
}

/// Adds each line's what-if cost: its token sums at `rates`, exact for the reason given
/// at `spend`. For lines read from the rollups, which hold sums only.
pub fn add_what_if(lines: &mut [SpendLine], rates: UnitRates) {
    for line in lines {
        line.what_if_usd = Some(rates.cost(&Usage {
            prompt_tokens: line.prompt_tokens,
            cached_tokens: line.cached_tokens,
            completion_tokens: line.completion_tokens,
            reasoning_tokens: line.reasoning_tokens,
            cache_write_tokens: 0,
        }));
    }
}

/// The outcome of a reprice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repriced {
    pub priced: u64,
    /// Rows of the model the catalog still cannot price.
    pub still_unpriced: u64,
}

/// Prices the unpriced rows of `model` (as requested or answered) since `since_ms`, at
/// the catalog's current prices (batch rows at batch rates, realtime rows at their
/// served tier's), in one transaction. Rows already priced keep theirs.
pub async fn reprice(
    store: &Store,
    catalog: &Catalog,
    model: &str,
    since_ms: i64,
) -> Result<Repriced, LedgerError> {
    let p = |n| placeholder(store, n);
    let select = sqlx::AssertSqlSafe(format!(
        "SELECT id, model_requested, model_answered, prompt_tokens, cached_tokens, \
         completion_tokens, reasoning_tokens, cache_write_tokens, kind, service_tier FROM requests \
         WHERE cost_pico IS NULL AND ts_ms >= {} AND (model_requested = {} OR model_answered = {})",
        p(1),
        p(2),
        p(3)
    ));
    let update = format!(
        "UPDATE requests SET cost_pico = {}, priced_model = {}, price_variant = {}, input_rate = {}, \
         cached_input_rate = {}, output_rate = {}, cache_write_rate = {} \
         WHERE id = {} AND cost_pico IS NULL",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8)
    );
    let mut outcome = Repriced {
        priced: 0,
        still_unpriced: 0,
    };
    // The same steps on either pool; only the row and transaction types differ.
    macro_rules! reprice_in {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await.map_err(LedgerError::Read)?;
            let rows = sqlx::query(select)
                .bind(since_ms)
                .bind(model)
                .bind(model)
                .fetch_all(&mut *tx)
                .await
                .map_err(LedgerError::Read)?;
            for row in &rows {
                let row = unpriced(row)?;
                let (answered, requested) = (row.answered.as_deref(), row.requested.as_deref());
                // As the row would have been priced when recorded: a batch line at batch
                // rates, a realtime request at the tier that served it.
                let priced = if row.kind == super::Kind::Batch.as_str() {
                    catalog.price(answered, requested, &row.usage, true)
                } else {
                    let tier = row.service_tier.as_deref().unwrap_or("default");
                    catalog.price_served(answered, requested, &row.usage, tier)
                };
                let Some(priced) = priced else {
                    outcome.still_unpriced += 1;
                    continue;
                };
                let micros = |rate: crate::pricing::Rate| super::to_i64(rate.micros_per_million());
                sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                    .bind(i64::try_from(priced.cost.as_pico()).unwrap_or(i64::MAX))
                    .bind(priced.model)
                    .bind(priced.variant.as_str())
                    .bind(micros(priced.rates.input))
                    .bind(micros(priced.rates.cached_input))
                    .bind(micros(priced.rates.output))
                    // As the writer records it: a model without a cache-write rate
                    // charges its writes at input.
                    .bind(micros(priced.rates.cache_write()))
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(LedgerError::Read)?;
                outcome.priced += 1;
            }
            tx.commit().await.map_err(LedgerError::Read)?;
        }};
    }
    match store {
        Store::Sqlite(ledger) => reprice_in!(ledger.pool()),
        Store::Postgres(ledger) => reprice_in!(ledger.pool()),
    }
    Ok(outcome)
}

/// An unpriced row as a reprice reads it.
struct Unpriced {
    id: String,
    answered: Option<String>,
    requested: Option<String>,
    usage: Usage,
    kind: String,
    service_tier: Option<String>,
}

fn unpriced<R>(row: &R) -> Result<Unpriced, LedgerError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |column: &str| -> Result<Option<String>, LedgerError> {
        row.try_get::<Option<String>, _>(column)
            .map_err(LedgerError::Read)
    };
    Ok(Unpriced {
        id: row.try_get("id").map_err(LedgerError::Read)?,
        answered: text("model_answered")?,
        requested: text("model_requested")?,
        kind: row.try_get("kind").map_err(LedgerError::Read)?,
        service_tier: text("service_tier")?,
        usage: Usage {
            prompt_tokens: count(row, "prompt_tokens")?,
            cached_tokens: count(row, "cached_tokens")?,
            completion_tokens: count(row, "completion_tokens")?,
            reasoning_tokens: count(row, "reasoning_tokens")?,
            cache_write_tokens: count(row, "cache_write_tokens")?,
        },
    })
}

/// The what-if model's standard rates, or `None` if the catalog cannot price it.
pub fn what_if_rates(catalog: &Catalog, model: &str) -> Option<UnitRates> {
    let resolved = catalog.resolve(model)?;
    let variant = if resolved.fine_tuned {
        Variant::FineTuned
    } else {
        Variant::Standard
    };
    resolved.prices.rates(variant)
}

/// A plain-text table; unpriced requests and tokens sit next to every total.
pub fn render_table(lines: &[SpendLine], what_if: Option<&str>) -> String {
    let mut header = vec![
        "group",
        "requests",
        "prompt",
        "cached",
        "completion",
        "reasoning",
        "cost_usd",
        "unpriced_req",
        "unpriced_tok",
    ];
    if what_if.is_some() {
        header.extend(["what_if_usd", "difference_usd"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for line in lines {
        let mut row = vec![
            line.group.clone(),
            line.requests.to_string(),
            line.prompt_tokens.to_string(),
            line.cached_tokens.to_string(),
            line.completion_tokens.to_string(),
            line.reasoning_tokens.to_string(),
            line.cost_usd.to_decimal_string(),
            line.unpriced_requests.to_string(),
            line.unpriced_tokens.to_string(),
        ];
        if let Some(what_if) = line.what_if_usd {
            row.push(what_if.to_decimal_string());
            row.push(signed_difference(what_if, line.cost_usd));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    if let Some(model) = what_if {
        let _ = writeln!(
            out,
            "what-if: the same tokens at {model}'s standard prices (unpriced rows included)\n"
        );
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    out
}

pub fn render_csv(lines: &[SpendLine]) -> String {
    let mut out = String::from(
        "group,requests,prompt_tokens,cached_tokens,completion_tokens,reasoning_tokens,cost_usd,unpriced_requests,unpriced_tokens,what_if_usd\n",
    );
    for l in lines {
        // A leading = + - @ would make a spreadsheet run the cell as a formula.
        let group = if l.group.starts_with(['=', '+', '-', '@']) {
            format!("'{}", l.group)
        } else {
            l.group.clone()
        };
        let group = if group.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", group.replace('"', "\"\""))
        } else {
            group
        };
        let _ = writeln!(
            out,
            "{group},{},{},{},{},{},{},{},{},{}",
            l.requests,
            l.prompt_tokens,
            l.cached_tokens,
            l.completion_tokens,
            l.reasoning_tokens,
            l.cost_usd,
            l.unpriced_requests,
            l.unpriced_tokens,
            l.what_if_usd
                .map(|c| c.to_decimal_string())
                .unwrap_or_default()
        );
    }
    out
}

/// `a − b` as an exact signed decimal string.
fn signed_difference(a: Cost, b: Cost) -> String {
    if a >= b {
        Cost::from_pico(a.as_pico() - b.as_pico()).to_decimal_string()
    } else {
        format!(
            "-{}",
            Cost::from_pico(b.as_pico() - a.as_pico()).to_decimal_string()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_signed_and_exact() {
        let a = Cost::from_pico(1_500_000);
        let b = Cost::from_pico(4_000_000);
        assert_eq!(signed_difference(a, b), "-0.0000025");
        assert_eq!(signed_difference(b, a), "0.0000025");
    }
}
