//! Spend from the hourly rollups: what `/admin/spend`, `tollgate spend --by team|key`
//! and `/v1/tollgate/me` read. The rollups are kept by triggers in the same
//! transaction as the rows, so these totals are the rows' totals, exactly, at hour
//! grain.

use super::report::SpendLine;
use super::{LedgerError, Store};
use crate::pricing::Cost;

/// What spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupGroup {
    Team,
    Key,
    Model,
    Day,
    Hour,
    Kind,
    /// One line with everything that matched.
    All,
}

impl RollupGroup {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "team" => Self::Team,
            "key" => Self::Key,
            "model" => Self::Model,
            "day" => Self::Day,
            "hour" => Self::Hour,
            "kind" => Self::Kind,
            _ => return None,
        })
    }

    fn sql(self, store: &Store) -> &'static str {
        match (self, store) {
            (Self::Team, _) => {
                "CASE WHEN s.team_id = '' THEN '(no team)' ELSE coalesce(t.name, s.team_id) END"
            }
            (Self::Key, _) => "coalesce(k.prefix, s.key_id)",
            (Self::Model, _) => "s.model",
            (Self::Kind, _) => "s.kind",
            (Self::All, _) => "'all'",
            (Self::Day, Store::Sqlite(_)) => "date(s.hour_ms / 1000, 'unixepoch')",
            (Self::Day, Store::Postgres(_)) => {
                "to_char(to_timestamp(s.hour_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
            (Self::Hour, Store::Sqlite(_)) => {
                "strftime('%Y-%m-%dT%H:00:00Z', s.hour_ms / 1000, 'unixepoch')"
            }
            (Self::Hour, Store::Postgres(_)) => {
                "to_char(to_timestamp(s.hour_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00:00Z\"')"
            }
        }
    }
}

/// Which rows to total. Times are Unix ms; `from` is rounded down and `to` up to whole
/// hours, the rollups' grain.
#[derive(Debug, Clone, Default)]
pub struct RollupFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub team_id: Option<String>,
    pub key_id: Option<String>,
    pub kind: Option<String>,
}

const HOUR_MS: i64 = 3_600_000;

/// Totals per group, ordered by group. Cost is summed as whole micro-USD plus pico
/// remainders, so the database's 64-bit sum cannot overflow below $9 trillion and the
/// total is still exact.
pub async fn rollup_spend(
    store: &Store,
    group: RollupGroup,
    filter: &RollupFilter,
) -> Result<Vec<SpendLine>, LedgerError> {
    let mut conditions = Vec::new();
    if filter.from_ms.is_some() {
        conditions.push("s.hour_ms >= ?");
    }
    if filter.to_ms.is_some() {
        conditions.push("s.hour_ms < ?");
    }
    if filter.team_id.is_some() {
        conditions.push("s.team_id = ?");
    }
    if filter.key_id.is_some() {
        conditions.push("s.key_id = ?");
    }
    if filter.kind.is_some() {
        conditions.push("s.kind = ?");
    }
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = store.sql(&format!(
        "SELECT {g} AS grp, CAST(sum(s.requests) AS BIGINT) AS requests, \
         CAST(sum(s.prompt_tokens) AS BIGINT) AS prompt, \
         CAST(sum(s.cached_tokens) AS BIGINT) AS cached, \
         CAST(sum(s.completion_tokens) AS BIGINT) AS completion, \
         CAST(sum(s.reasoning_tokens) AS BIGINT) AS reasoning, \
         CAST(sum(s.cost_pico / 1000000) AS BIGINT) AS cost_micros, \
         CAST(sum(s.cost_pico % 1000000) AS BIGINT) AS cost_rem, \
         CAST(sum(s.unpriced) AS BIGINT) AS unpriced, \
         CAST(sum(s.unpriced_tokens) AS BIGINT) AS unpriced_tokens \
         FROM spend_hourly s \
         LEFT JOIN teams t ON t.id = s.team_id \
         LEFT JOIN api_keys k ON k.id = s.key_id \
         {filter_sql} GROUP BY grp HAVING sum(s.requests) > 0 ORDER BY grp",
        g = group.sql(store),
    ));
    let from = filter.from_ms.map(|ms| ms - ms.rem_euclid(HOUR_MS));
    let to = filter.to_ms.map(|ms| {
        ms - ms.rem_euclid(HOUR_MS)
            + if ms.rem_euclid(HOUR_MS) == 0 {
                0
            } else {
                HOUR_MS
            }
    });
    macro_rules! run {
        ($pool:expr) => {{
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            if let Some(from) = from {
                query = query.bind(from);
            }
            if let Some(to) = to {
                query = query.bind(to);
            }
            if let Some(team) = &filter.team_id {
                query = query.bind(team.clone());
            }
            if let Some(key) = &filter.key_id {
                query = query.bind(key.clone());
            }
            if let Some(kind) = &filter.kind {
                query = query.bind(kind.clone());
            }
            let rows = query.fetch_all($pool).await.map_err(LedgerError::Read)?;
            rows.iter().map(line).collect()
        }};
    }
    match store {
        Store::Sqlite(ledger) => run!(ledger.pool()),
        Store::Postgres(ledger) => run!(ledger.pool()),
    }
}

fn line<R>(row: &R) -> Result<SpendLine, LedgerError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |column: &str| -> Result<u64, LedgerError> {
        let value: i64 = row.try_get(column).map_err(LedgerError::Read)?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    Ok(SpendLine {
        group: row.try_get("grp").map_err(LedgerError::Read)?,
        requests: get("requests")?,
        prompt_tokens: get("prompt")?,
        cached_tokens: get("cached")?,
        completion_tokens: get("completion")?,
        reasoning_tokens: get("reasoning")?,
        cost_usd: Cost::from_pico(
            u128::from(get("cost_micros")?) * 1_000_000 + u128::from(get("cost_rem")?),
        ),
        unpriced_requests: get("unpriced")?,
        unpriced_tokens: get("unpriced_tokens")?,
        what_if_usd: None,
    })
}
