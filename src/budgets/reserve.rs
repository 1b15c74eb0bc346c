//! Reserve-then-settle. Admission reserves a request's worst-case cost in the database,
//! under a lock per budget, after checking committed spend (the hourly rollups) plus
//! other requests' open reservations against the limit. The request's ledger row
//! deletes its reservation in the transaction that records its real cost, so at every
//! commit "spent + reserved" covers every admitted request exactly once, on every
//! replica sharing the database.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::alert::{AlertEvent, Alerts, Level};
use super::{Budget, PICO_PER_MICRO};
use crate::auth::Identity;
use crate::auth::store::{KeyRecord, TeamRecord};
use crate::config::{BudgetConfig, StoreFailure};
use crate::error::{ApiError, BudgetRefusal};
use crate::ledger::Store;
use crate::metrics::{Caller, Metrics};
use crate::pricing::Cost;

/// One budget that applies to a request.
#[derive(Debug, Clone)]
struct Scope {
    /// `key` or `team`; also names the id column.
    kind: &'static str,
    id: String,
    name: String,
    budget: Budget,
}

/// Where one budget stands now.
#[derive(Debug, Clone, Serialize)]
pub struct Standing {
    pub scope: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub budget: Budget,
    pub period_start_ms: i64,
    /// When the budget resets; `None` for `total`.
    pub resets_at_ms: Option<i64>,
    pub spent_usd: Cost,
    /// Requests admitted and not yet recorded.
    pub reserved_usd: Cost,
    pub remaining_usd: Cost,
}

/// A reservation made; settled by the ledger row with the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub amount: Cost,
}

pub struct Budgets {
    store: Store,
    config: BudgetConfig,
    alerts: Alerts,
    metrics: Metrics,
    /// How long a reservation outlives its request's deadline before it lapses (a
    /// replica that died mid-request never settles its own).
    ttl: Duration,
    /// Whether the last check failed, so an outage is logged once, not per request.
    failing: AtomicBool,
    /// When the store last failed (Unix ms): for a second after, checks apply the
    /// failure policy at once instead of each waiting out a connection timeout.
    failed_at_ms: AtomicI64,
}

/// How long a failed store is not retried by budget checks.
const RETRY_AFTER_FAILURE_MS: i64 = 1_000;

impl Budgets {
    pub fn new(store: Store, config: BudgetConfig, metrics: Metrics, ttl: Duration) -> Self {
        Self {
            alerts: Alerts::new(config.webhook_url.clone(), metrics.clone()),
            store,
            config,
            metrics,
            ttl,
            failing: AtomicBool::new(false),
            failed_at_ms: AtomicI64::new(i64::MIN),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Whether any budget applies to the caller (only then is anything estimated or
    /// reserved, and only then does admission touch the database).
    pub fn applies(identity: &Identity) -> bool {
        !scopes(identity).is_empty()
    }

    /// Reserves `amount` against every budget of the caller, or refuses with the 429
    /// of the first budget it would exceed.
    pub async fn reserve(
        &self,
        identity: &Identity,
        row_id: &str,
        amount: Cost,
        ts_ms: i64,
    ) -> Result<Option<Reservation>, ApiError> {
        self.reserve_for(identity, row_id, amount, ts_ms, self.ttl)
            .await
    }

    /// As `reserve`, held for `ttl` unless deleted sooner: a batch holds its estimate
    /// until its output is billed, long after any request's deadline.
    pub async fn reserve_for(
        &self,
        identity: &Identity,
        row_id: &str,
        amount: Cost,
        ts_ms: i64,
        ttl: Duration,
    ) -> Result<Option<Reservation>, ApiError> {
        let scopes = scopes(identity);
        if scopes.is_empty() {
            return Ok(None);
        }
        let expires_ms = ts_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let request = Request {
            row_id,
            key_id: &identity.key_id,
            team_id: identity.team_id.as_deref(),
            amount,
            ts_ms,
            expires_ms,
            threshold: self.config.soft_threshold_percent,
        };
        let recently_failed = crate::clock::now_ms()
            .saturating_sub(self.failed_at_ms.load(Ordering::Relaxed))
            < RETRY_AFTER_FAILURE_MS;
        let decided = if recently_failed {
            Err(sqlx::Error::PoolTimedOut)
        } else {
            decide(&self.store, &scopes, &request).await
        };
        match decided {
            Ok(decision) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("budget checks reach the database again");
                }
                for event in decision.alerts {
                    self.alerts.fire(event);
                }
                // Known here at no extra cost: the check just read every figure.
                let caller = Caller::from(identity);
                for (scope, used, limit) in decision.standing {
                    self.metrics.budget_used(scope, &caller, used, limit);
                }
                match decision.refused {
                    Some(error) => Err(error),
                    None => Ok(Some(Reservation {
                        id: row_id.to_owned(),
                        amount,
                    })),
                }
            }
            Err(error) => {
                if !recently_failed {
                    self.failed_at_ms
                        .store(crate::clock::now_ms(), Ordering::Relaxed);
                }
                let open = self.config.on_store_error == StoreFailure::FailOpen;
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        %error,
                        policy = if open { "fail_open" } else { "fail_closed" },
                        "cannot check budgets: the database is unreachable"
                    );
                }
                let action = if open { "admitted" } else { "refused" };
                self.metrics
                    .budget_check_errors
                    .with_label_values(&[action])
                    .inc();
                if open {
                    Ok(None)
                } else {
                    Err(ApiError::BudgetUnavailable)
                }
            }
        }
    }

    /// Where each of the caller's budgets stands at `now_ms`.
    pub async fn standings(
        &self,
        identity: &Identity,
        now_ms: i64,
    ) -> Result<Vec<Standing>, sqlx::Error> {
        let mut out = Vec::new();
        for scope in scopes(identity) {
            out.push(standing(&self.store, scope, now_ms).await?);
        }
        Ok(out)
    }

    /// Where a team's budget stands at `now_ms`; `None` if it has none. For views of
    /// every budget (the dashboard), where no caller's identity is at hand.
    pub async fn team_standing(
        store: &Store,
        team: &TeamRecord,
        now_ms: i64,
    ) -> Result<Option<Standing>, sqlx::Error> {
        let Some(budget) = team.budget else {
            return Ok(None);
        };
        let scope = Scope {
            kind: "team",
            id: team.id.clone(),
            name: team.name.clone(),
            budget,
        };
        standing(store, scope, now_ms).await.map(Some)
    }

    /// As `team_standing`, for a key.
    pub async fn key_standing(
        store: &Store,
        key: &KeyRecord,
        now_ms: i64,
    ) -> Result<Option<Standing>, sqlx::Error> {
        let Some(budget) = key.budget else {
            return Ok(None);
        };
        let scope = Scope {
            kind: "key",
            id: key.id.clone(),
            name: key.name.clone(),
            budget,
        };
        standing(store, scope, now_ms).await.map(Some)
    }

    /// Deletes lapsed reservations now and then; they stop counting when they lapse,
    /// this only keeps the table small.
    pub fn spawn_sweeper(store: Store) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let sql = store.sql("DELETE FROM budget_reservations WHERE expires_ms < ?");
                let now = crate::clock::now_ms();
                let result = crate::auth::store::on_pool!(&store, pool => {
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).execute(pool).await.map(|_| ())
                });
                if let Err(error) = result {
                    tracing::debug!(%error, "cannot sweep lapsed budget reservations");
                }
            }
        })
    }
}

/// The budgets that apply: the key's, then its team's.
fn scopes(identity: &Identity) -> Vec<Scope> {
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

struct Request<'a> {
    row_id: &'a str,
    key_id: &'a str,
    team_id: Option<&'a str>,
    amount: Cost,
    ts_ms: i64,
    expires_ms: i64,
    threshold: u8,
}

struct Decision {
    refused: Option<ApiError>,
    alerts: Vec<AlertEvent>,
    /// Each budget's scope, spend plus reservations (this request's if admitted),
    /// and limit.
    standing: Vec<(&'static str, Cost, Cost)>,
}

/// Committed spend (whole micro-USD, and the pico remainders) and open reservations
/// of one budget's period, in ONE statement: under Postgres' read committed, separate
/// statements see separate snapshots, and a row committed between them would move
/// from "reserved" to "spent" unseen by both.
const USAGE_KEY: &str = "SELECT \
    (SELECT CAST(coalesce(sum(cost_pico / 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE key_id = ? AND hour_ms >= ?), \
    (SELECT CAST(coalesce(sum(cost_pico % 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE key_id = ? AND hour_ms >= ?), \
    (SELECT CAST(coalesce(sum(amount_pico), 0) AS BIGINT) FROM budget_reservations \
     WHERE key_id = ? AND ts_ms >= ? AND expires_ms > ?)";
const USAGE_TEAM: &str = "SELECT \
    (SELECT CAST(coalesce(sum(cost_pico / 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE team_id = ? AND hour_ms >= ?), \
    (SELECT CAST(coalesce(sum(cost_pico % 1000000), 0) AS BIGINT) FROM spend_hourly \
     WHERE team_id = ? AND hour_ms >= ?), \
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
async fn standing(store: &Store, scope: Scope, now_ms: i64) -> Result<Standing, sqlx::Error> {
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
async fn decide(
    store: &Store,
    scopes: &[Scope],
    request: &Request<'_>,
) -> Result<Decision, sqlx::Error> {
    macro_rules! decide_in {
        ($tx:expr) => {{
            let mut decision = Decision {
                refused: None,
                alerts: Vec::new(),
                standing: Vec::with_capacity(scopes.len()),
            };
            for scope in scopes {
                let start = scope.budget.period.start(request.ts_ms);
                let (spent, reserved) = usage_in!(store, $tx, scope, start, request.ts_ms);
                let limit = scope.budget.limit().as_pico();
                let used = spent.as_pico() + reserved.as_pico();
                let after = used.saturating_add(request.amount.as_pico());
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
                        needed: request.amount.to_decimal_string(),
                    })));
                }
            }
            if decision.refused.is_none() {
                sqlx::query(sqlx::AssertSqlSafe(store.sql(INSERT_RESERVATION)))
                    .bind(request.row_id)
                    .bind(request.key_id)
                    .bind(request.team_id)
                    .bind(i64::try_from(request.amount.as_pico()).unwrap_or(i64::MAX))
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
