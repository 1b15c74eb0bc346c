//! Spend from the rollups (`spend_daily` for whole days, `spend_hourly` for the hours
//! around them): what `/admin/spend`, `tollgate spend --by team|key|kind|tier|provider` and
//! `/v1/tollgate/me` read. The rollups are kept by triggers in the same transaction as
//! the rows, so these totals are the rows' totals, exactly, at hour grain.

use sqlx::Row as _;

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
    /// The service tier that served (and priced) the rows.
    Tier,
    /// The kind of upstream that served the rows (`openai`, `azure`, `anthropic`,
    /// `gemini`, `openai_compatible`); rows from before providers were recorded are
    /// `openai`'s.
    Provider,
    /// One line with everything that matched.
    All,
}

/// The label of rows without a served tier: batch and training rows, and rows recorded
/// before tiers were.
pub const NO_TIER: &str = "(none)";

impl RollupGroup {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "team" => Self::Team,
            "key" => Self::Key,
            "model" => Self::Model,
            "day" => Self::Day,
            "hour" => Self::Hour,
            "kind" => Self::Kind,
            "tier" => Self::Tier,
            "provider" => Self::Provider,
            _ => return None,
        })
    }

    /// The label shown for a group, from `s.{c}`, the value `key` grouped by into
    /// column `c` (`g`, or `h` for the inner group of two).
    fn label(self, store: &Store, c: &str) -> String {
        match (self, store) {
            (Self::Team, _) => {
                format!(
                    "CASE WHEN s.{c} = '' THEN '(no team)' ELSE coalesce(t_{c}.name, s.{c}) END"
                )
            }
            (Self::Key, _) => format!("coalesce(k_{c}.prefix, s.{c})"),
            (Self::Tier, _) => format!("CASE WHEN s.{c} = '' THEN '{NO_TIER}' ELSE s.{c} END"),
            (Self::Model | Self::Kind | Self::Provider, _) => format!("s.{c}"),
            (Self::All, _) => "'all'".to_owned(),
            (Self::Day, Store::Sqlite(_)) => format!("date(s.{c} / 1000, 'unixepoch')"),
            (Self::Day, Store::Postgres(_)) => {
                format!("to_char(to_timestamp(s.{c} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
            }
            (Self::Hour, Store::Sqlite(_)) => {
                format!("strftime('%Y-%m-%dT%H:00:00Z', s.{c} / 1000, 'unixepoch')")
            }
            (Self::Hour, Store::Postgres(_)) => format!(
                "to_char(to_timestamp(s.{c} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00:00Z\"')"
            ),
        }
    }

    /// What a rollup table's rows are grouped by before labelling; `None`: not grouped.
    fn key(self, time: &str) -> Option<String> {
        Some(match self {
            Self::Team => "team_id".to_owned(),
            Self::Key => "key_id".to_owned(),
            Self::Model => "model".to_owned(),
            Self::Kind => "kind".to_owned(),
            Self::Tier => "service_tier".to_owned(),
            Self::Provider => "provider".to_owned(),
            Self::All => return None,
            Self::Day => format!("{time} - {time} % {DAY_MS}"),
            Self::Hour => time.to_owned(),
        })
    }

    /// Names are looked up once per group, after the rollup rows are summed.
    fn join(self, c: &str) -> String {
        match self {
            Self::Team => format!(" LEFT JOIN teams t_{c} ON t_{c}.id = s.{c}"),
            Self::Key => format!(" LEFT JOIN api_keys k_{c} ON k_{c}.id = s.{c}"),
            _ => String::new(),
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
    /// Only rows of this kind; without one, every kind but `shadow`.
    pub kind: Option<String>,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A span of time read from one rollup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    table: &'static str,
    time: &'static str,
    from: Option<i64>,
    to: Option<i64>,
}

fn hourly(from: Option<i64>, to: Option<i64>) -> Part {
    Part {
        table: "spend_hourly",
        time: "hour_ms",
        from,
        to,
    }
}

/// Splits `[from, to)` (whole hours; `None` is open) into the whole UTC days inside it,
/// read from `spend_daily`, and the hours before the first and after the last of them,
/// read from `spend_hourly`: a 90-day report then reads ~24x fewer rows. Hour groups
/// need hourly rows throughout.
fn parts(groups: &[RollupGroup], from: Option<i64>, to: Option<i64>) -> Vec<Part> {
    if groups.contains(&RollupGroup::Hour) {
        return vec![hourly(from, to)];
    }
    let first_day = from.map(|ms| ms - ms.rem_euclid(DAY_MS) + ceil_rem(ms, DAY_MS));
    let end_day = to.map(|ms| ms - ms.rem_euclid(DAY_MS));
    if let (Some(first), Some(end)) = (first_day, end_day) {
        if first >= end {
            return vec![hourly(from, to)];
        }
    }
    let mut parts = vec![Part {
        table: "spend_daily",
        time: "day_ms",
        from: first_day,
        to: end_day,
    }];
    if let (Some(from), Some(first)) = (from, first_day) {
        if from < first {
            parts.push(hourly(Some(from), Some(first)));
        }
    }
    if let (Some(end), Some(to)) = (end_day, to) {
        if end < to {
            parts.push(hourly(Some(end), Some(to)));
        }
    }
    parts
}

/// What rounds `ms` up to a multiple of `unit`, beyond rounding it down.
fn ceil_rem(ms: i64, unit: i64) -> i64 {
    if ms.rem_euclid(unit) == 0 { 0 } else { unit }
}

/// A value bound to a placeholder, in order.
enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// Totals per group, ordered by group. Each rollup table's rows are summed per raw
/// group value first, then labelled and merged: names, dates and the join to teams or
/// keys are computed once per group, not once per rollup row. Cost is summed as whole
/// micro-USD plus pico remainders, so the database's 64-bit sum cannot overflow below
/// $9 trillion and the total is still exact.
pub async fn rollup_spend(
    store: &Store,
    group: RollupGroup,
    filter: &RollupFilter,
) -> Result<Vec<SpendLine>, LedgerError> {
    let lines = grouped(store, &[group], filter).await?;
    Ok(lines.into_iter().map(|(line, _)| line).collect())
}

/// One line of a two-level grouping: the outer group's label in `line.group`, the
/// inner one's in `inner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedLine {
    pub line: SpendLine,
    pub inner: String,
}

/// Totals per pair of groups (each team's spend per day, say), ordered by outer then
/// inner group; read as `rollup_spend` reads, in one statement.
pub async fn rollup_spend_nested(
    store: &Store,
    outer: RollupGroup,
    inner: RollupGroup,
    filter: &RollupFilter,
) -> Result<Vec<NestedLine>, LedgerError> {
    let lines = grouped(store, &[outer, inner], filter).await?;
    Ok(lines
        .into_iter()
        .map(|(line, inner)| NestedLine {
            line,
            inner: inner.unwrap_or_default(),
        })
        .collect())
}

/// The grouped columns' names: the outer group in `g`, the inner in `h`.
const COLUMNS: [&str; 2] = ["g", "h"];

/// The statement behind `rollup_spend` (one group) and `rollup_spend_nested` (two).
async fn grouped(
    store: &Store,
    groups: &[RollupGroup],
    filter: &RollupFilter,
) -> Result<Vec<(SpendLine, Option<String>)>, LedgerError> {
    let groups = &groups[..groups.len().min(COLUMNS.len())];
    let from = filter.from_ms.map(|ms| ms - ms.rem_euclid(HOUR_MS));
    let to = filter
        .to_ms
        .map(|ms| ms - ms.rem_euclid(HOUR_MS) + ceil_rem(ms, HOUR_MS));
    let mut binds = Vec::new();
    let mut selects = Vec::new();
    for part in parts(groups, from, to) {
        let mut conditions = Vec::new();
        let time = part.time;
        if let Some(from) = part.from {
            conditions.push(format!("{time} >= ?"));
            binds.push(Bind::Int(from));
        }
        if let Some(to) = part.to {
            conditions.push(format!("{time} < ?"));
            binds.push(Bind::Int(to));
        }
        for (column, value) in [
            ("team_id", &filter.team_id),
            ("key_id", &filter.key_id),
            ("kind", &filter.kind),
        ] {
            if let Some(value) = value {
                conditions.push(format!("{column} = ?"));
                binds.push(Bind::Text(value));
            }
        }
        // Shadow comparisons are not spend: they show only when asked for by kind.
        if filter.kind.is_none() {
            conditions.push("kind <> 'shadow'".to_owned());
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let mut keys = Vec::new();
        let mut grouped_by = Vec::new();
        for (group, column) in groups.iter().zip(COLUMNS) {
            match group.key(time) {
                Some(key) => {
                    keys.push(format!("{key} AS {column}"));
                    grouped_by.push(column);
                }
                None => keys.push(format!("'' AS {column}")),
            }
        }
        let group_sql = if grouped_by.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", grouped_by.join(", "))
        };
        selects.push(format!(
            "SELECT {keys}, sum(requests) AS requests, sum(prompt_tokens) AS prompt, \
             sum(cached_tokens) AS cached, sum(completion_tokens) AS completion, \
             sum(reasoning_tokens) AS reasoning, sum(cost_pico / 1000000) AS cost_micros, \
             sum(cost_pico % 1000000) AS cost_rem, sum(unpriced) AS unpriced, \
             sum(unpriced_tokens) AS unpriced_tokens FROM {table} {filter_sql}{group_sql}",
            keys = keys.join(", "),
            table = part.table,
        ));
    }
    let mut labels = Vec::new();
    let mut joins = String::new();
    for (group, (column, name)) in groups.iter().zip(COLUMNS.iter().zip(["grp", "sub"])) {
        labels.push(format!("{} AS {name}", group.label(store, column)));
        joins.push_str(&group.join(column));
    }
    let order = ["grp", "sub"][..groups.len()].join(", ");
    let sql = store.sql(&format!(
        "SELECT {labels}, CAST(sum(s.requests) AS BIGINT) AS requests, \
         CAST(sum(s.prompt) AS BIGINT) AS prompt, \
         CAST(sum(s.cached) AS BIGINT) AS cached, \
         CAST(sum(s.completion) AS BIGINT) AS completion, \
         CAST(sum(s.reasoning) AS BIGINT) AS reasoning, \
         CAST(sum(s.cost_micros) AS BIGINT) AS cost_micros, \
         CAST(sum(s.cost_rem) AS BIGINT) AS cost_rem, \
         CAST(sum(s.unpriced) AS BIGINT) AS unpriced, \
         CAST(sum(s.unpriced_tokens) AS BIGINT) AS unpriced_tokens \
         FROM ({parts}) s{joins} \
         GROUP BY {order} HAVING sum(s.requests) > 0 ORDER BY {order}",
        labels = labels.join(", "),
        parts = selects.join(" UNION ALL "),
    ));
    let nested = groups.len() > 1;
    macro_rules! run {
        ($pool:expr) => {{
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for bind in binds {
                query = match bind {
                    Bind::Int(value) => query.bind(value),
                    Bind::Text(value) => query.bind(value.to_owned()),
                };
            }
            let rows = query.fetch_all($pool).await.map_err(LedgerError::Read)?;
            rows.iter()
                .map(|row| {
                    let inner = if nested {
                        Some(row.try_get("sub").map_err(LedgerError::Read)?)
                    } else {
                        None
                    };
                    Ok((line(row)?, inner))
                })
                .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_whole_days_daily_and_the_hours_around_them_hourly() {
        const D: i64 = DAY_MS;
        const H: i64 = HOUR_MS;
        let daily = |from, to| Part {
            table: "spend_daily",
            time: "day_ms",
            from,
            to,
        };
        let cases = [
            (RollupGroup::Team, None, None, vec![daily(None, None)]),
            (
                RollupGroup::Team,
                Some(10 * D + 5 * H),
                Some(13 * D + 2 * H),
                vec![
                    daily(Some(11 * D), Some(13 * D)),
                    hourly(Some(10 * D + 5 * H), Some(11 * D)),
                    hourly(Some(13 * D), Some(13 * D + 2 * H)),
                ],
            ),
            (
                RollupGroup::Day,
                Some(10 * D),
                Some(12 * D),
                vec![daily(Some(10 * D), Some(12 * D))],
            ),
            (
                RollupGroup::Model,
                None,
                Some(12 * D + 3 * H),
                vec![
                    daily(None, Some(12 * D)),
                    hourly(Some(12 * D), Some(12 * D + 3 * H)),
                ],
            ),
            // No whole day inside: hourly rows only.
            (
                RollupGroup::Key,
                Some(10 * D + H),
                Some(11 * D + 5 * H),
                vec![hourly(Some(10 * D + H), Some(11 * D + 5 * H))],
            ),
            (
                RollupGroup::Team,
                Some(10 * D + H),
                Some(10 * D + 5 * H),
                vec![hourly(Some(10 * D + H), Some(10 * D + 5 * H))],
            ),
            // Hours need hourly rows throughout.
            (
                RollupGroup::Hour,
                Some(10 * D + H),
                None,
                vec![hourly(Some(10 * D + H), None)],
            ),
        ];
        for (group, from, to, want) in cases {
            assert_eq!(
                parts(&[group], from, to),
                want,
                "{group:?} {from:?}..{to:?}"
            );
        }
    }
}
