//! SQLite's rollups, kept per batch. SQLite has no statement-level triggers, and its
//! per-row insert triggers upserted both rollup tables and deleted the row's budget
//! reservation once for every row: a third of SQLite's work per row under load. The
//! writer now does the same once per batch, in the batch's own transaction, from the
//! rows it has just inserted (Postgres's triggers already run once per statement).
//!
//! The batch's rows are summed here, in memory, into one multi-row upsert per rollup
//! table: an `INSERT … SELECT … GROUP BY` over the just-inserted rows measured ten
//! times dearer (SQLite's temporary B-tree for the grouping). Only a statement that
//! skipped some of its rows (ids a replayed spill already stored) is rolled up from
//! the table instead, since which of its rows were new is known only there.

use std::collections::BTreeMap;

use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteQueryResult;

use super::{LedgerRow, to_i64};

/// The columns a rollup row adds to, after its bucket.
macro_rules! rollup_columns {
    () => {
        "team_id, key_id, model, kind, service_tier, provider, requests, prompt_tokens, \
         cached_tokens, completion_tokens, reasoning_tokens, cost_pico, unpriced, \
         unpriced_tokens"
    };
}

/// What an upsert into a rollup does to a row it finds: add the new figures.
macro_rules! on_conflict {
    ($bucket:literal) => {
        concat!(
            " ON CONFLICT (",
            $bucket,
            ", team_id, key_id, model, kind, service_tier, provider) DO UPDATE SET \
             requests = requests + excluded.requests, \
             prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
             cached_tokens = cached_tokens + excluded.cached_tokens, \
             completion_tokens = completion_tokens + excluded.completion_tokens, \
             reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
             cost_pico = cost_pico + excluded.cost_pico, \
             unpriced = unpriced + excluded.unpriced, \
             unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens"
        )
    };
}

/// One rollup table's upsert from the rows `rowid BETWEEN ?1 AND ?2`, read back from
/// the table. The grouping and sums are the update triggers' (a reprice), and
/// `group_key` and `Sums::add` compute the same in memory.
macro_rules! rollup_from_rows {
    ($table:literal, $bucket:literal, $span:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (",
            $bucket,
            ", ",
            rollup_columns!(),
            ") SELECT ts_ms - ts_ms % ",
            $span,
            ", coalesce(team_id, ''), coalesce(key_id, caller), \
             coalesce(priced_model, model_answered, model_requested, ''), kind, \
             coalesce(service_tier, ''), coalesce(provider, 'openai'), count(*), \
             sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens), \
             sum(reasoning_tokens), sum(coalesce(cost_pico, 0)), sum(cost_pico IS NULL), \
             sum(CASE WHEN cost_pico IS NULL THEN prompt_tokens + completion_tokens ELSE 0 END) \
             FROM requests WHERE rowid BETWEEN ?1 AND ?2 GROUP BY 1, 2, 3, 4, 5, 6, 7",
            on_conflict!($bucket)
        )
    };
}

/// A rollup table: its statements and the span of its buckets.
struct Table {
    /// `INSERT INTO table (bucket, columns…) VALUES `, for the in-memory sums.
    head: &'static str,
    conflict: &'static str,
    /// The upsert from the rows `rowid BETWEEN ?1 AND ?2`, read back from `requests`.
    from_rows: &'static str,
    span_ms: i64,
}

macro_rules! rollup_table {
    ($table:literal, $bucket:literal, $span:literal) => {
        Table {
            head: concat!(
                "INSERT INTO ",
                $table,
                " (",
                $bucket,
                ", ",
                rollup_columns!(),
                ") VALUES "
            ),
            conflict: on_conflict!($bucket),
            from_rows: rollup_from_rows!($table, $bucket, $span),
            span_ms: $span,
        }
    };
}

const TABLES: [Table; 2] = [
    rollup_table!("spend_hourly", "hour_ms", 3600000),
    rollup_table!("spend_daily", "day_ms", 86400000),
];
/// A row settles its budget reservation in the transaction that stores it.
const SETTLE: &str = "DELETE FROM budget_reservations WHERE id IN \
     (SELECT id FROM requests WHERE rowid BETWEEN ?1 AND ?2)";

/// What one batch adds to one rollup row, keyed as the rollup tables are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    requests: i64,
    prompt_tokens: i64,
    cached_tokens: i64,
    completion_tokens: i64,
    reasoning_tokens: i64,
    cost_pico: i64,
    unpriced: i64,
    unpriced_tokens: i64,
}

/// bucket start (ms), team, key, model, kind, served tier, provider: the expressions of
/// `rollup_from_rows!` (and of the update triggers), computed from the row in memory.
type GroupKey<'a> = (
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'static str,
    &'a str,
    &'a str,
);

fn group_key(row: &LedgerRow, span_ms: i64) -> GroupKey<'_> {
    let model = row
        .price
        .as_ref()
        .map(|price| price.model.as_str())
        .or(row.model_answered.as_deref())
        .or(row.model_requested.as_deref())
        .unwrap_or("");
    (
        row.ts_ms - row.ts_ms % span_ms,
        row.team_id.as_deref().unwrap_or(""),
        row.key_id.as_deref().unwrap_or(&row.caller),
        model,
        row.kind.as_str(),
        row.service_tier.as_deref().unwrap_or(""),
        &row.provider,
    )
}

impl Sums {
    /// The row's figures as the insert binds them (`push_row!`).
    fn add(&mut self, row: &LedgerRow) {
        let usage = &row.usage;
        let (prompt, completion) = (to_i64(usage.prompt_tokens), to_i64(usage.completion_tokens));
        let cost = row
            .price
            .as_ref()
            .map(|price| i64::try_from(price.cost.as_pico()).unwrap_or(i64::MAX));
        self.requests += 1;
        self.prompt_tokens = self.prompt_tokens.saturating_add(prompt);
        self.cached_tokens = self
            .cached_tokens
            .saturating_add(to_i64(usage.cached_tokens));
        self.completion_tokens = self.completion_tokens.saturating_add(completion);
        self.reasoning_tokens = self
            .reasoning_tokens
            .saturating_add(to_i64(usage.reasoning_tokens));
        self.cost_pico = self.cost_pico.saturating_add(cost.unwrap_or(0));
        if cost.is_none() {
            self.unpriced += 1;
            self.unpriced_tokens = self
                .unpriced_tokens
                .saturating_add(prompt.saturating_add(completion));
        }
    }
}

/// The rowids one statement inserted: the last `rows_affected` up to its
/// `last_insert_rowid`. An `INSERT OR IGNORE` skips a known id without using a rowid,
/// and the transaction holds SQLite's write lock from its first insert, so the rowids
/// of a batch's new rows follow one another.
fn inserted_rowids(done: &SqliteQueryResult) -> Option<(i64, i64)> {
    let inserted = i64::try_from(done.rows_affected()).ok()?;
    (inserted > 0).then(|| {
        let last = done.last_insert_rowid();
        (last - inserted + 1, last)
    })
}

/// Adds the batch's inserted rows to both rollups and settles their reservations.
/// `statements` are the results of the inserts of `chunks`, in order.
pub(super) async fn roll_up<'r>(
    connection: &mut SqliteConnection,
    chunks: impl Iterator<Item = &'r [LedgerRow]>,
    statements: &[SqliteQueryResult],
) -> Result<(), sqlx::Error> {
    let mut groups: [BTreeMap<GroupKey<'r>, Sums>; 2] = Default::default();
    let mut all: Option<(i64, i64)> = None;
    for (chunk, done) in chunks.zip(statements) {
        let Some((first, last)) = inserted_rowids(done) else {
            continue;
        };
        all = Some(all.map_or((first, last), |(start, _)| (start, last)));
        if u64::try_from(chunk.len()).ok() == Some(done.rows_affected()) {
            for row in chunk {
                for (table, groups) in TABLES.iter().zip(&mut groups) {
                    groups
                        .entry(group_key(row, table.span_ms))
                        .or_default()
                        .add(row);
                }
            }
        } else {
            for table in &TABLES {
                sqlx::query(table.from_rows)
                    .bind(first)
                    .bind(last)
                    .execute(&mut *connection)
                    .await?;
            }
        }
    }
    let Some((first, last)) = all else {
        return Ok(());
    };
    for (table, groups) in TABLES.iter().zip(&groups) {
        upsert(connection, table, groups).await?;
    }
    sqlx::query(SETTLE)
        .bind(first)
        .bind(last)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// One multi-row upsert of `groups` into `table`.
async fn upsert(
    connection: &mut SqliteConnection,
    table: &Table,
    groups: &BTreeMap<GroupKey<'_>, Sums>,
) -> Result<(), sqlx::Error> {
    if groups.is_empty() {
        return Ok(());
    }
    let mut sql =
        String::with_capacity(table.head.len() + table.conflict.len() + 48 * groups.len());
    sql.push_str(table.head);
    for i in 0..groups.len() {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        sql.push_str("?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(table.conflict);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (&(start, team, key, model, kind, tier, provider), sums) in groups {
        query = query
            .bind(start)
            .bind(team)
            .bind(key)
            .bind(model)
            .bind(kind)
            .bind(tier)
            .bind(provider)
            .bind(sums.requests)
            .bind(sums.prompt_tokens)
            .bind(sums.cached_tokens)
            .bind(sums.completion_tokens)
            .bind(sums.reasoning_tokens)
            .bind(sums.cost_pico)
            .bind(sums.unpriced)
            .bind(sums.unpriced_tokens);
    }
    query.execute(&mut *connection).await?;
    Ok(())
}

/// Adds the rows with rowids `first..=last` to both rollups and settles their
/// reservations, in the caller's transaction, reading them back from the table.
pub(super) async fn roll_up_rowids(
    connection: &mut SqliteConnection,
    first: i64,
    last: i64,
) -> Result<(), sqlx::Error> {
    for sql in TABLES.iter().map(|table| table.from_rows).chain([SETTLE]) {
        sqlx::query(sql)
            .bind(first)
            .bind(last)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
