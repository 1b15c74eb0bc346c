//! Reserve-then-settle. Admission reserves a request's worst-case cost in the database,
//! under a lock per budget, after checking committed spend (the hourly rollups) plus
//! other requests' open reservations against the limit. The request's ledger row
//! deletes its reservation in the transaction that records its real cost, so at every
//! commit "spent + reserved" covers every admitted request exactly once, on every
//! replica sharing the database.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::Budget;
use super::alert::Alerts;
use super::check::{Request, Scope, decide, scopes, standing};
use super::trouble::{Trouble, trouble};
use crate::auth::Identity;
use crate::auth::store::{KeyRecord, TeamRecord};
use crate::config::{BudgetConfig, DowngradeScope, StoreFailure};
use crate::error::ApiError;
use crate::ledger::Store;
use crate::metrics::{Caller, Metrics};
use crate::pricing::Cost;

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
    /// The request is to be served by its downgrade (see [`Downgrade`]).
    pub downgraded: bool,
}

/// A cheaper way to serve a request, taken when one of the caller's budgets is at or
/// past `percent` (spent plus reserved, before this request) of its limit. Decided in
/// the same locked check as the reservation, so the request reserves what the model
/// that will serve it can cost, never a figure read a moment earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downgrade {
    /// The downgraded request's worst-case cost.
    pub amount: Cost,
    pub percent: u8,
    pub scope: DowngradeScope,
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
    /// Checks refused as busy since the last warning, and when that was (Unix ms): load
    /// comes and goes by the request, so it is logged every few seconds, not per flip.
    busy_refused: AtomicU64,
    busy_logged_ms: AtomicI64,
    /// When the store last failed (Unix ms): for a second after, checks apply the
    /// failure policy at once instead of each waiting out a connection timeout.
    failed_at_ms: AtomicI64,
}

/// How long a failed store is not retried by budget checks.
const RETRY_AFTER_FAILURE_MS: i64 = 1_000;

/// A database that has answered nothing for this long is down, not busy.
const QUIET_MS: i64 = 5_000;

/// How often refusals of a busy database are logged.
const BUSY_LOG_EVERY_MS: i64 = 10_000;

impl Budgets {
    pub fn new(store: Store, config: BudgetConfig, metrics: Metrics, ttl: Duration) -> Self {
        Self {
            alerts: Alerts::new(config.webhook_url.clone(), metrics.clone()),
            store,
            config,
            metrics,
            ttl,
            failing: AtomicBool::new(false),
            busy_refused: AtomicU64::new(0),
            busy_logged_ms: AtomicI64::new(i64::MIN),
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
        self.reserve_checked(identity, row_id, amount, ts_ms, ttl, None)
            .await
    }

    /// As `reserve`, reserving `downgrade.amount` instead (and saying so) when a budget
    /// it watches is past its percentage.
    pub async fn reserve_or_downgrade(
        &self,
        identity: &Identity,
        row_id: &str,
        amount: Cost,
        ts_ms: i64,
        downgrade: Option<Downgrade>,
    ) -> Result<Option<Reservation>, ApiError> {
        self.reserve_checked(identity, row_id, amount, ts_ms, self.ttl, downgrade)
            .await
    }

    /// Deletes a reservation whose request was refused before it was forwarded, off the
    /// request path; if the delete fails, the reservation lapses at its expiry.
    pub fn release(&self, tasks: &tokio_util::task::TaskTracker, id: String) {
        let store = self.store.clone();
        tasks.spawn(async move {
            let sql = store.sql("DELETE FROM budget_reservations WHERE id = ?");
            let result = crate::auth::store::on_pool!(&store, pool => {
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).execute(pool).await.map(|_| ())
            });
            if let Err(error) = result {
                tracing::debug!(%error, "cannot release a budget reservation; it lapses");
            }
        });
    }

    async fn reserve_checked(
        &self,
        identity: &Identity,
        row_id: &str,
        amount: Cost,
        ts_ms: i64,
        ttl: Duration,
        downgrade: Option<Downgrade>,
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
            downgrade,
        };
        let started_ms = crate::clock::now_ms();
        let recently_failed = started_ms.saturating_sub(self.failed_at_ms.load(Ordering::Relaxed))
            < RETRY_AFTER_FAILURE_MS;
        let decided = if recently_failed {
            Err(sqlx::Error::PoolTimedOut)
        } else {
            decide(&self.store, &scopes, &request).await
        };
        let health = self.store.health();
        let trouble = decided.as_ref().err().map(|error| {
            // Other queries got answers while this check waited, or shortly before,
            // and nothing has found the database down since.
            let answering = !recently_failed
                && !health.down()
                && health.answered_since(
                    started_ms.min(crate::clock::now_ms().saturating_sub(QUIET_MS)),
                );
            trouble(error, self.store.is_sqlite(), answering)
        });
        match trouble {
            Some(Trouble::Busy) => {
                // A lock timeout is the database's answer; a pool timeout is not.
                if matches!(decided, Err(sqlx::Error::Database(_))) {
                    health.answered();
                }
                return Err(self.busy(decided.err()));
            }
            // Inside the retry pause nothing was tried, so nothing new was learnt.
            Some(Trouble::Down) if recently_failed => {}
            Some(Trouble::Down) => health.failed(),
            None => health.answered(),
        }
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
                        amount: decision.amount,
                        downgraded: decision.downgraded,
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

    /// A check that ran out of time on a database that still answers. Admitting it
    /// unchecked (as `fail_open` does for an outage) would let budgets overshoot
    /// exactly when load peaks; refusing it for good would be wrong too. A 503 the
    /// SDKs retry, under either policy.
    fn busy(&self, error: Option<sqlx::Error>) -> ApiError {
        self.busy_refused.fetch_add(1, Ordering::Relaxed);
        let now = crate::clock::now_ms();
        let logged = self.busy_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(logged) >= BUSY_LOG_EVERY_MS
            && self
                .busy_logged_ms
                .compare_exchange(logged, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Counts this one and the refusals since the last warning.
            let refused = self.busy_refused.swap(0, Ordering::Relaxed);
            tracing::warn!(
                error = %error.map(|e| e.to_string()).unwrap_or_default(),
                refused,
                "budget checks run out of time while the database answers (load, not an outage): refused with 503 budget_store_busy"
            );
        }
        self.metrics
            .budget_check_errors
            .with_label_values(&["busy"])
            .inc();
        ApiError::BudgetBusy
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Budgets;
    use crate::auth::Identity;
    use crate::budgets::{Budget, Period};
    use crate::config::BudgetConfig;
    use crate::error::ApiError;
    use crate::ledger::{PoolSettings, Store};
    use crate::metrics::Metrics;
    use crate::pricing::Cost;

    fn budgeted() -> Identity {
        Identity::for_test(|key, _| {
            key.budget = Some(Budget {
                limit_micros: 1_000_000,
                period: Period::Total,
            });
        })
    }

    /// A real pool timeout: the test holds the pool's only connection. Whether the
    /// check fails open depends on whether the database is answering other queries.
    #[tokio::test]
    async fn a_timed_out_check_fails_open_only_when_the_database_is_not_answering() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let settings = PoolSettings {
            max_connections: Some(1),
            acquire_timeout: Duration::from_millis(300),
        };
        let store = Store::open_with(&url, settings).await.unwrap();
        let budgets = Budgets::new(
            store.clone(),
            BudgetConfig::default(),
            Metrics::new().unwrap(),
            Duration::from_secs(60),
        );
        let identity = budgeted();
        let amount = Cost::from_pico(1_000);
        let now = crate::clock::now_ms;
        let Store::Sqlite(ledger) = &store else {
            panic!("a SQLite store")
        };
        let held = ledger.pool().acquire().await.unwrap();

        // Nothing answers while the check waits: an outage, and fail_open admits.
        let outage = budgets.reserve(&identity, "r1", amount, now()).await;
        assert!(matches!(outage, Ok(None)), "{outage:?}");

        // Past the second in which a failed store is not retried. Other queries
        // (the ledger writer's commits, in a server) are answered while this check
        // waits: load, refused with a retryable 503, not admitted unchecked.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let health = store.health().clone();
        let answering = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                health.answered();
            }
        });
        let load = budgets.reserve(&identity, "r2", amount, now()).await;
        answering.abort();
        assert!(matches!(load, Err(ApiError::BudgetBusy)), "{load:?}");

        // Found down (an I/O error elsewhere) after the last answer: an outage, though
        // the database answered a moment ago. (An answer in the same millisecond as a
        // failure counts as later.)
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.health().failed();
        let outage = budgets.reserve(&identity, "r3", amount, now()).await;
        assert!(matches!(outage, Ok(None)), "{outage:?}");
        assert!(store.health().down());

        // The database answers again (the writer commits); a check inside the retry
        // pause still takes the policy, but learns nothing and marks nothing down.
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.health().answered();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let paused = budgets.reserve(&identity, "r3b", amount, now()).await;
        assert!(matches!(paused, Ok(None)), "{paused:?}");
        assert!(!store.health().down());

        tokio::time::sleep(Duration::from_millis(1_100)).await;
        drop(held);
        let admitted = budgets.reserve(&identity, "r4", amount, now()).await;
        assert!(matches!(admitted, Ok(Some(_))), "{admitted:?}");
    }
}
