//! The locked check: each budget's committed spend and open reservations, read and
//! reserved against in one transaction under the budgets' locks.

use super::alert::{AlertEvent, Level};
use super::reserve::{Downgrade, Standing};
use super::{Budget, PICO_PER_MICRO};
use crate::auth::Identity;
use crate::config::DowngradeScope;
use crate::error::{ApiError, BudgetRefusal};
use crate::ledger::Store;
use crate::pricing::Cost;

/// One budget that applies to a request.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    /// `key` or `team`; also names the id column.
    pub(super) kind: &'static str,
    pub(super) id: String,
    pub(super) name: String,
    pub(super) budget: Budget,
}

/// The budgets that apply: the key's, then its team's.
pub(super) fn scopes(identity: &Identity) -> Vec<Scope> {
    let Some(entry) = &identity.key else {
        return Vec::new();
    };
    let mut scopes = Vec::with_capacity(2);
    if let Some(budget) = entry.key.budget {
        scopes.push(Scope {
            kind: "key",
            id: entry.key.id.clone(),
            name: entry.key.name.clone(),
            budget,
        });
    }
    if let Some(budget) = entry.team.budget {
        scopes.push(Scope {
            kind: "team",
            id: entry.team.id.clone(),
            name: entry.team.name.clone(),
            budget,
        });
    }
    scopes
}

pub(super) struct Request<'a> {
    pub(super) row_id: &'a str,
    pub(super) key_id: &'a str,
    pub(super) team_id: Option<&'a str>,
    pub(super) amount: Cost,
    pub(super) ts_ms: i64,
    pub(super) expires_ms: i64,
    pub(super) threshold: u8,
    pub(super) downgrade: Option<Downgrade>,
}

pub(super) struct Decision {
    /// What was reserved: the request's amount, or its downgrade's.
    pub(super) amount: Cost,
    pub(super) downgraded: bool,
    pub(super) refused: Option<ApiError>,
    pub(super) alerts: Vec<AlertEvent>,
    /// Each budget's scope, spend plus reservations (this request's if admitted),
    /// and limit.
    pub(super) standing: Vec<(&'static str, Cost, Cost)>,
}

/// Committed spend (whole micro-USD, and the pico remainders) and open reservations
/// of one budget's period, in ONE statement (shadow comparisons are never spend): under Postgres' read committed, separate
/// statements see separate snapshots, and a row committed between them would move
/// from "reserved" to "spent" unseen by both.
const USAGE_KEY: &str = "SELECT \
    (SELECT CAST(coalesce(sum(cost_pico / 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE key_id = ? AND hour_ms >= ? AND kind <> 'shadow'), \
    (SELECT CAST(coalesce(sum(cost_pico % 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE key_id = ? AND hour_ms >= ? AND kind <> 'shadow'), \
    (SELECT CAST(coalesce(sum(amount_pico), 0) AS BIGINT) FROM budget_reservations \
     WHERE key_id = ? AND ts_ms >= ? AND expires_ms > ?)";
const USAGE_TEAM: &str = "SELECT \
    (SELECT CAST(coalesce(sum(cost_pico / 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE team_id = ? AND hour_ms >= ? AND kind <> 'shadow'), \
    (SELECT CAST(coalesce(sum(cost_pico % 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE team_id = ? AND hour_ms >= ? AND kind <> 'shadow'), \
    (SELECT CAST(coalesce(sum(amount_pico), 0) AS BIGINT) FROM budget_reservations \
     WHERE team_id = ? AND ts_ms >= ? AND expires_ms > ?)";
const INSERT_ALERT: &str = "INSERT INTO budget_alerts (scope, scope_id, period_start_ms, level, \
    ts_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
const INSERT_RESERVATION: &str = "INSERT INTO budget_reservations (id, key_id, team_id, \
    amount_pico, ts_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)";

/// The committed spend and the open reservations of one budget's period. Summing
/// whole micro-USD plus pico remainders keeps any backend's 64-bit sum from
/// overflowing before the budget itself would.
macro_rules! usage_in {
    ($store:expr, $conn:expr, $scope:expr, $start:expr, $now:expr) => {{
        let sql = if $scope.kind == "key" {
            USAGE_KEY
        } else {
            USAGE_TEAM
        };
        let (micros, remainder, reserved): (i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe($store.sql(sql)))
                .bind(&$scope.id)
                .bind($start)
                .bind(&$scope.id)
                .bind($start)
                .bind(&$scope.id)
                .bind($start)
                .bind($now)
                .fetch_one(&mut *$conn)
                .await?;
        let pico = |value: i64| u128::try_from(value).unwrap_or(0);
        (
            Cost::from_pico(pico(micros) * PICO_PER_MICRO + pico(remainder)),
            Cost::from_pico(pico(reserved)),
        )
    }};
}

async fn usage(
    store: &Store,
    scope: &Scope,
    start: i64,
    now_ms: i64,
) -> Result<(Cost, Cost), sqlx::Error> {
    Ok(match store {
        Store::Sqlite(ledger) => {
            let mut conn = ledger.pool().acquire().await?;
            usage_in!(store, conn, scope, start, now_ms)
        }
        Store::Postgres(ledger) => {
            let mut conn = ledger.pool().acquire().await?;
            usage_in!(store, conn, scope, start, now_ms)
        }
    })
}

/// Where one budget stands at `now_ms`.
pub(super) async fn standing(
    store: &Store,
    scope: Scope,
    now_ms: i64,
) -> Result<Standing, sqlx::Error> {
    let start = scope.budget.period.start(now_ms);
    let (spent, reserved) = usage(store, &scope, start, now_ms).await?;
    let used = spent.as_pico().saturating_add(reserved.as_pico());
    Ok(Standing {
        scope: scope.kind,
        name: scope.name,
        budget: scope.budget,
        period_start_ms: start,
        resets_at_ms: scope.budget.period.end(now_ms),
        spent_usd: spent,
        reserved_usd: reserved,
        remaining_usd: Cost::from_pico(scope.budget.limit().as_pico().saturating_sub(used)),
    })
}

/// Checks every budget and reserves, all under the budgets' locks: SQLite's write lock
/// (`BEGIN IMMEDIATE`), or one Postgres advisory lock per budget taken in a fixed order.
pub(super) async fn decide(
    store: &Store,
    scopes: &[Scope],
    request: &Request<'_>,
) -> Result<Decision, sqlx::Error> {
    macro_rules! decide_in {
        ($tx:expr) => {{
            let mut figures = Vec::with_capacity(scopes.len());
            for scope in scopes {
                let start = scope.budget.period.start(request.ts_ms);
                let (spent, reserved) = usage_in!(store, $tx, scope, start, request.ts_ms);
                figures.push((start, spent, reserved));
            }
            let downgrade = request.downgrade.filter(|downgrade| {
                scopes
                    .iter()
                    .zip(&figures)
                    .any(|(scope, (_, spent, reserved))| {
                        let watched = match downgrade.scope {
                            DowngradeScope::Any => true,
                            DowngradeScope::Key => scope.kind == "key",
                            DowngradeScope::Team => scope.kind == "team",
                        };
                        let used = spent.as_pico() + reserved.as_pico();
                        watched
                            && used * 100
                                >= scope.budget.limit().as_pico() * u128::from(downgrade.percent)
                    })
            });
            let amount = downgrade.map_or(request.amount, |downgrade| downgrade.amount);
            let mut decision = Decision {
                amount,
                downgraded: downgrade.is_some(),
                refused: None,
                alerts: Vec::new(),
                standing: Vec::with_capacity(scopes.len()),
            };
            for (scope, &(start, spent, reserved)) in scopes.iter().zip(&figures) {
                let limit = scope.budget.limit().as_pico();
                let used = spent.as_pico() + reserved.as_pico();
                let after = used.saturating_add(amount.as_pico());
                let level = if after > limit {
                    Some(Level::Exhausted)
                } else if after * 100 >= limit * u128::from(request.threshold) {
                    Some(Level::Soft)
                } else {
                    None
                };
                if let Some(level) = level {
                    let inserted = sqlx::query(sqlx::AssertSqlSafe(store.sql(INSERT_ALERT)))
                        .bind(scope.kind)
                        .bind(&scope.id)
                        .bind(start)
                        .bind(level.as_str())
                        .bind(request.ts_ms)
                        .execute(&mut *$tx)
                        .await?
                        .rows_affected();
                    if inserted == 1 {
                        decision.alerts.push(AlertEvent {
                            scope: scope.kind,
                            id: scope.id.clone(),
                            name: scope.name.clone(),
                            level,
                            budget: scope.budget,
                            period_start_ms: start,
                            // A refused request spent nothing; an admitted one is now in flight.
                            used: Cost::from_pico(if after > limit { used } else { after }),
                        });
                    }
                }
                let counted = if after > limit { used } else { after };
                decision.standing.push((
                    scope.kind,
                    Cost::from_pico(counted),
                    Cost::from_pico(limit),
                ));
                if after > limit && decision.refused.is_none() {
                    decision.refused = Some(ApiError::BudgetExceeded(Box::new(BudgetRefusal {
                        scope: scope.kind,
                        period: scope.budget.period.as_str(),
                        limit: scope.budget.limit().to_decimal_string(),
                        spent: spent.to_decimal_string(),
                        reserved: reserved.to_decimal_string(),
                        needed: amount.to_decimal_string(),
                    })));
                }
            }
            if decision.refused.is_none() {
                sqlx::query(sqlx::AssertSqlSafe(store.sql(INSERT_RESERVATION)))
                    .bind(request.row_id)
                    .bind(request.key_id)
                    .bind(request.team_id)
                    .bind(i64::try_from(amount.as_pico()).unwrap_or(i64::MAX))
                    .bind(request.ts_ms)
                    .bind(request.expires_ms)
                    .execute(&mut *$tx)
                    .await?;
            }
            $tx.commit().await?;
            Ok(decision)
        }};
    }
    match store {
        Store::Sqlite(ledger) => {
            let mut tx = ledger.pool().begin_with("BEGIN IMMEDIATE").await?;
            decide_in!(tx)
        }
        Store::Postgres(ledger) => {
            let mut tx = ledger.pool().begin().await?;
            // A lock held elsewhere (a hung replica's transaction) must not hold this
            // request, and its pooled connection, for longer than a connection wait.
            let lock_timeout = store.acquire_timeout().as_millis().max(1);
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(format!("{lock_timeout}ms"))
                .execute(&mut *tx)
                .await?;
            // Scopes come key first, team second, for every request: a fixed order.
            for scope in scopes {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(format!("tollgate:budget:{}:{}", scope.kind, scope.id))
                    .execute(&mut *tx)
                    .await?;
            }
            decide_in!(tx)
        }
    }
}
