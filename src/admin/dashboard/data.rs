//! `GET /admin/dashboard/data?from&to&top`: every figure the dashboard draws for one
//! range, in one answer: totals, spend per team, per model and per service tier, the
//! top keys, each team's spend per hour or day, where every budget stands now, and the
//! shadow comparisons (cost per request and agreement of each model and candidate).
//! Money is in exact decimal strings, as everywhere in the admin API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use serde_json::json;

use super::super::Admin;
use super::super::body::bad;
use crate::auth::store;
use crate::budgets::{Budgets, Standing};
use crate::clock::{self, format_ms, now_ms};
use crate::error::ApiError;
use crate::ledger::report::SpendLine;
use crate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend, rollup_spend_nested};
use crate::ledger::shadow::shadow_report;
use crate::pricing::Cost;

const PARAMS: [&str; 3] = ["from", "to", "top"];
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Longer ranges would draw more than a year of daily bars; `/admin/spend` has no cap.
const MAX_RANGE_MS: i64 = 366 * DAY_MS;
/// Up to two days the chart has a bar per hour; beyond, per day.
const HOURLY_UP_TO_MS: i64 = 2 * DAY_MS;
const DEFAULT_FROM: &str = "30d";
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 100;

/// The range and bucket size asked for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    /// Whole hours, the rollups' grain: `from` rounded down, `to` up.
    from_ms: i64,
    to_ms: i64,
    bucket: RollupGroup,
    top: usize,
}

fn range(query: &HashMap<String, String>, now: i64) -> Result<Range, ApiError> {
    if let Some(unknown) = query.keys().find(|name| !PARAMS.contains(&name.as_str())) {
        return Err(bad(
            unknown,
            format!("unknown parameter; known: {}", PARAMS.join(", ")),
        ));
    }
    let time = |param: &str, default: Option<&str>| -> Result<i64, ApiError> {
        match query.get(param).map(String::as_str).or(default) {
            Some(text) => clock::parse_time(text, now).map_err(|m| bad(param, m)),
            None => Ok(now),
        }
    };
    let from = time("from", Some(DEFAULT_FROM))?;
    let to = time("to", None)?;
    let from_ms = from - from.rem_euclid(HOUR_MS);
    let to_ms = to - to.rem_euclid(HOUR_MS)
        + if to.rem_euclid(HOUR_MS) == 0 {
            0
        } else {
            HOUR_MS
        };
    if from >= to {
        return Err(bad("from", "must be before `to`"));
    }
    if to_ms - from_ms > MAX_RANGE_MS {
        return Err(bad("from", "the dashboard shows at most 366 days at once"));
    }
    let top = match query.get("top") {
        None => DEFAULT_TOP,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=MAX_TOP).contains(top))
            .ok_or_else(|| {
                bad(
                    "top",
                    format!("`{text}` is not a whole number from 1 to {MAX_TOP}"),
                )
            })?,
    };
    let bucket = if to_ms - from_ms <= HOURLY_UP_TO_MS {
        RollupGroup::Hour
    } else {
        RollupGroup::Day
    };
    Ok(Range {
        from_ms,
        to_ms,
        bucket,
        top,
    })
}

/// The bucket labels of the range, as the rollups label hours and days.
fn buckets(range: Range) -> Vec<String> {
    let (step, first) = match range.bucket {
        RollupGroup::Hour => (HOUR_MS, range.from_ms),
        _ => (DAY_MS, range.from_ms - range.from_ms.rem_euclid(DAY_MS)),
    };
    let mut out = Vec::new();
    let mut at = first;
    while at < range.to_ms {
        let label = format_ms(at);
        out.push(match range.bucket {
            RollupGroup::Hour => label,
            _ => label.chars().take(10).collect(),
        });
        at += step;
    }
    out
}

/// One team's spend per bucket, in the order of `buckets`.
#[derive(Debug, Serialize)]
struct Series {
    team: String,
    total_usd: Cost,
    cost_usd: Vec<Cost>,
}

/// A key among the top spenders, with its name and team when it is a tollgate key
/// (a passthrough caller is known by its fingerprint only).
#[derive(Debug, Serialize)]
struct TopKey {
    #[serde(flatten)]
    line: SpendLine,
    name: Option<String>,
    team: Option<String>,
}

/// One budget bar.
#[derive(Debug, Serialize)]
struct BudgetBar {
    #[serde(flatten)]
    standing: Standing,
    /// For a key budget: the key's display prefix and its team.
    key_prefix: Option<String>,
    team: Option<String>,
    /// Spent (reservations in flight excluded) as a percentage of the limit, rounded
    /// down to a tenth, from the exact figures.
    used_percent: String,
    #[serde(skip)]
    permille: u128,
}

impl BudgetBar {
    fn new(standing: Standing, key_prefix: Option<String>, team: Option<String>) -> Self {
        let limit = standing.budget.limit().as_pico();
        let spent = standing.spent_usd.as_pico();
        let permille = match spent.checked_mul(1000) {
            _ if limit == 0 => {
                if spent == 0 {
                    0
                } else {
                    1000
                }
            }
            Some(scaled) => scaled / limit,
            None => u128::MAX / limit,
        };
        Self {
            standing,
            key_prefix,
            team,
            used_percent: format!("{}.{}", permille / 10, permille % 10),
            permille,
        }
    }
}

pub async fn data(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let range = range(&query, now)?;
    let filter = RollupFilter {
        from_ms: Some(range.from_ms),
        to_ms: Some(range.to_ms),
        ..RollupFilter::default()
    };
    let read = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "cannot read the dashboard's figures");
        ApiError::Internal
    };
    let spend = |group| rollup_spend(&admin.store, group, &filter);
    let total = spend(RollupGroup::All)
        .await
        .map_err(|e| read(&e))?
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut teams = spend(RollupGroup::Team).await.map_err(|e| read(&e))?;
    let mut models = spend(RollupGroup::Model).await.map_err(|e| read(&e))?;
    let mut tiers = spend(RollupGroup::Tier).await.map_err(|e| read(&e))?;
    let mut providers = spend(RollupGroup::Provider).await.map_err(|e| read(&e))?;
    let mut keys = spend(RollupGroup::Key).await.map_err(|e| read(&e))?;
    for lines in [
        &mut teams,
        &mut models,
        &mut tiers,
        &mut providers,
        &mut keys,
    ] {
        by_cost(lines);
    }
    keys.truncate(range.top);
    let nested = rollup_spend_nested(&admin.store, RollupGroup::Team, range.bucket, &filter)
        .await
        .map_err(|e| read(&e))?;

    let labels = buckets(range);
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| (label.as_str(), i))
        .collect();
    let mut series: Vec<Series> = teams
        .iter()
        .map(|team| Series {
            team: team.group.clone(),
            total_usd: team.cost_usd,
            cost_usd: vec![Cost::ZERO; labels.len()],
        })
        .collect();
    let position: HashMap<String, usize> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s.team.clone(), i))
        .collect();
    for point in nested {
        if let (Some(&team), Some(&bucket)) = (
            position.get(&point.line.group),
            index.get(point.inner.as_str()),
        ) {
            series[team].cost_usd[bucket] = point.line.cost_usd;
        }
    }

    let all_keys = store::list_keys(&admin.store, None).await?;
    let by_prefix: HashMap<&str, &store::KeyRecord> = all_keys
        .iter()
        .map(|key| (key.prefix.as_str(), key))
        .collect();
    let top_keys: Vec<TopKey> = keys
        .into_iter()
        .map(|line| {
            let record = by_prefix.get(line.group.as_str());
            TopKey {
                name: record.map(|key| key.name.clone()),
                team: record.map(|key| key.team.clone()),
                line,
            }
        })
        .collect();
    let budgets = budget_bars(&admin, &all_keys, now)
        .await
        .map_err(|e| read(&e))?;
    let shadow = shadow_report(&admin.store, range.from_ms, range.to_ms)
        .await
        .map_err(|e| read(&e))?;

    let body = json!({
        "object": "tollgate.dashboard",
        "from": format_ms(range.from_ms),
        "to": format_ms(range.to_ms),
        "from_ms": range.from_ms,
        "to_ms": range.to_ms,
        "bucket": if range.bucket == RollupGroup::Hour { "hour" } else { "day" },
        "total": total,
        "teams": teams,
        "models": models,
        "tiers": tiers,
        "providers": providers,
        "top_keys": top_keys,
        "series": { "buckets": labels, "teams": series },
        "budgets": budgets,
        "shadow": shadow,
    });
    // Spend figures are for whoever holds the admin key, not for shared caches.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// Highest spend first; ties by requests, then by name, so the order is stable.
fn by_cost(lines: &mut [SpendLine]) {
    lines.sort_by(|a, b| {
        b.cost_usd
            .cmp(&a.cost_usd)
            .then(b.requests.cmp(&a.requests))
            .then_with(|| a.group.cmp(&b.group))
    });
}

/// Every team's and live key's budget, as it stands now, the most used first.
async fn budget_bars(
    admin: &Admin,
    keys: &[store::KeyRecord],
    now: i64,
) -> Result<Vec<BudgetBar>, ApiError> {
    let failed = |error: sqlx::Error| {
        tracing::error!(%error, "cannot read budget standings");
        ApiError::Internal
    };
    let mut bars = Vec::new();
    for team in store::list_teams(&admin.store).await? {
        if let Some(standing) = Budgets::team_standing(&admin.store, &team, now)
            .await
            .map_err(failed)?
        {
            bars.push(BudgetBar::new(standing, None, None));
        }
    }
    for key in keys.iter().filter(|key| key.revoked_ms.is_none()) {
        if let Some(standing) = Budgets::key_standing(&admin.store, key, now)
            .await
            .map_err(failed)?
        {
            bars.push(BudgetBar::new(
                standing,
                Some(key.prefix.clone()),
                Some(key.team.clone()),
            ));
        }
    }
    bars.sort_by(|a, b| {
        b.permille
            .cmp(&a.permille)
            .then(a.standing.scope.cmp(b.standing.scope))
            .then_with(|| a.standing.name.cmp(&b.standing.name))
    });
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ranges_round_to_hours_and_pick_their_bucket() {
        // 2026-11-24T20:25:29Z
        let now: i64 = 1_795_551_929_000;
        let hour = now - now.rem_euclid(HOUR_MS);
        let week = range(&query(&[("from", "7d")]), now).unwrap();
        assert_eq!(week.from_ms, hour - 7 * DAY_MS);
        assert_eq!(week.to_ms, hour + HOUR_MS);
        assert_eq!(week.bucket, RollupGroup::Day);
        assert_eq!(week.top, DEFAULT_TOP);
        let day = range(&query(&[("from", "24h"), ("top", "3")]), now).unwrap();
        assert_eq!((day.bucket, day.top), (RollupGroup::Hour, 3));
        let dates = query(&[("from", "2026-11-01"), ("to", "2026-11-03")]);
        let dates = range(&dates, now).unwrap();
        assert_eq!(dates.to_ms - dates.from_ms, 2 * DAY_MS);
        assert_eq!(dates.bucket, RollupGroup::Hour);
        assert_eq!(buckets(dates).len(), 48);
        assert_eq!(buckets(dates)[1], "2026-11-01T01:00:00Z");
        assert_eq!(buckets(week)[0], "2026-11-17");
        assert_eq!(buckets(week).len(), 8, "a partial day at each end");
    }

    #[test]
    fn bad_parameters_are_named() {
        let now: i64 = 1_795_551_929_000;
        for (pairs, param) in [
            (vec![("from", "yesterday")], "from"),
            (vec![("to", "soon")], "to"),
            (vec![("from", "1d"), ("to", "2d")], "from"),
            (vec![("from", "400d")], "from"),
            (vec![("top", "0")], "top"),
            (vec![("top", "101")], "top"),
            (vec![("top", "ten")], "top"),
            (vec![("group_by", "team")], "group_by"),
        ] {
            match range(&query(&pairs), now) {
                Err(ApiError::BadParam { param: got, .. }) => assert_eq!(got, param, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn budget_percentages_round_down_from_exact_figures() {
        use crate::budgets::{Budget, Period};
        let bar = |spent_pico: u128, limit_micros: u64| {
            let standing = Standing {
                scope: "team",
                name: "t".to_owned(),
                budget: Budget {
                    limit_micros,
                    period: Period::Total,
                },
                period_start_ms: 0,
                resets_at_ms: None,
                spent_usd: Cost::from_pico(spent_pico),
                reserved_usd: Cost::ZERO,
                remaining_usd: Cost::ZERO,
            };
            BudgetBar::new(standing, None, None).used_percent
        };
        // $0.57 of $1, $1 of $3 (33.33…), $2.5 of $2, nothing of nothing.
        assert_eq!(bar(570_000_000_000, 1_000_000), "57.0");
        assert_eq!(bar(1_000_000_000_000, 3_000_000), "33.3");
        assert_eq!(bar(2_500_000_000_000, 2_000_000), "125.0");
        assert_eq!(bar(0, 0), "0.0");
        assert_eq!(bar(1, 0), "100.0");
    }
}
