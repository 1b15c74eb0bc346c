//! Cost-aware routing: aliases that map a model name to ordered targets (model and
//! upstream), fallbacks on retryable failures, cooldowns from the upstreams'
//! `retry-after`, budget-aware downgrades, a fair share of the organisation's upstream
//! limits by team, and shadow comparisons against candidate models.
//!
//! This module decides; the proxy acts. The proxy asks for a request's [`Plan`], runs
//! its attempt loop around "send this request to upstream U as model M", and reports
//! each answer back ([`Routing::answered`]). Everything on the request path reads this
//! process's memory; Redis (when shared) is read and written by a background task.

mod agree;
mod body;
mod cooldown;
mod downgrade;
mod headroom;
mod metrics;
mod plan;
mod shadow;
mod share;
mod signals;
mod sync;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use tokio::task::JoinHandle;

pub use agree::{Agreement, compare};
pub use body::with_model;
pub use cooldown::Cooldowns;
pub use downgrade::Candidate;
pub use headroom::{Debit, Headroom, Refused};
pub use metrics::RoutingMetrics;
pub use plan::{Plan, Prepared, Target, TargetRef};
pub use shadow::Mirror;
pub use share::Wire;
pub use signals::{Reported, go_duration, reported, retry_after};
pub use sync::{COOLDOWNS_KEY, HEADROOM_KEY};

use crate::config::{Config, LimitsBackend, resolve_routes};
use crate::metering::Endpoint;
use crate::metrics::Metrics;
use downgrade::Downgrades;
use plan::Table;
use shadow::Shadows;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot register routing metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("limits.redis_url: {0}")]
    Redis(::redis::RedisError),
    #[error("invalid routes:\n{0}")]
    Routes(crate::config::Problems),
}

/// Why an upstream call failed before anything reached the client, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429, 5xx (529 included): the upstream answered, refusing.
    Status(u16),
    /// No connection.
    Connect,
    /// No response head within the first-byte timeout.
    Timeout,
    /// The request broke off before the response head.
    Error,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Self::Status(429) => "status_429",
            Self::Status(_) => "status_5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

pub struct Routing {
    table: Table,
    cooldowns: Cooldowns,
    headroom: Headroom,
    downgrades: Downgrades,
    shadows: Shadows,
    /// Per upstream: whether tollgate holds its key. Only then is what it says about
    /// its limits true for every caller; with callers' own keys it is theirs alone.
    shared_key: Vec<bool>,
    names: Vec<String>,
    max_cooldown: Duration,
    metrics: RoutingMetrics,
    sync: Option<sync::Sync>,
    sync_interval: Duration,
    /// Whether the last sync failed, so an outage is logged once.
    sync_failing: AtomicBool,
    /// Places for shadow requests in flight: a sampled request finding none is not
    /// mirrored, so a slow candidate can pile up neither tasks nor memory.
    shadow_permits: Arc<tokio::sync::Semaphore>,
    shadow_timeout: Duration,
}

impl Routing {
    /// From the (validated) config. `shared_key[i]`: whether upstream `i` has a key of
    /// tollgate's own.
    pub fn new(
        config: &Config,
        shared_key: Vec<bool>,
        metrics: &Metrics,
    ) -> Result<Self, RoutingError> {
        let metrics = RoutingMetrics::new(metrics)?;
        let routes = resolve_routes(
            &config.routes,
            config.routing.max_attempts.max(1),
            &config.upstreams,
        )
        .map_err(RoutingError::Routes)?;
        let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let shares: HashMap<String, u32> = config
            .teams
            .iter()
            .filter_map(|(name, team)| Some((name.clone(), team.share?)))
            .collect();
        let settings = share::Settings::new(&config.routing.headroom, shares);
        // Cooldowns matter to routes, headroom to rationing: with neither there is
        // nothing to share.
        let useful = !config.routes.is_empty() || config.routing.headroom.rationing();
        let sync =
            if useful && config.routing.share && config.limits.backend == LimitsBackend::Redis {
                let sync = sync::Sync::new(
                    &config.limits.redis_url,
                    config.limits.redis_timeout,
                    names.clone(),
                )
                .map_err(RoutingError::Redis)?;
                Some(sync)
            } else {
                None
            };
        let prepare = |upstream: usize, model: &str| {
            let name = names.get(upstream).map_or("", String::as_str);
            let count = |result| metrics.attempts.with_label_values(&[name, model, result]);
            Some(Arc::new(plan::Prepared {
                header: HeaderValue::from_str(model).ok(),
                answered: count("answered"),
                fell_back: count("fell_back"),
                failed: count("failed"),
            }))
        };
        let table = Table::new(routes, prepare);
        Ok(Self {
            table,
            cooldowns: Cooldowns::new(names.len()),
            headroom: Headroom::new(settings, names.clone(), metrics.clone()),
            downgrades: Downgrades::new(&config.downgrades, &config.upstreams),
            shadows: Shadows::new(&config.shadow, &config.upstreams),
            shared_key,
            names,
            max_cooldown: config.routing.max_cooldown,
            metrics,
            sync,
            sync_interval: config.routing.sync_interval,
            sync_failing: AtomicBool::new(false),
            shadow_permits: Arc::new(tokio::sync::Semaphore::new(
                config.routing.shadow_max_in_flight.max(1),
            )),
            shadow_timeout: config.routing.shadow_timeout,
        })
    }

    pub fn metrics(&self) -> &RoutingMetrics {
        &self.metrics
    }

    pub fn upstream_name(&self, upstream: usize) -> &str {
        self.names.get(upstream).map_or("", String::as_str)
    }

    /// The plan for a request's `model`: its alias's targets, or `direct()`, the
    /// upstream the `[[upstreams]]` patterns pick. `None`: no upstream serves it.
    pub fn plan(
        &self,
        model: Option<&str>,
        direct: impl FnOnce() -> Option<usize>,
    ) -> Option<Plan> {
        self.table.plan(model, direct)
    }

    /// Whether a failure with this status moves on to the next target.
    pub fn retryable(status: u16) -> bool {
        status == 429 || (500..=599).contains(&status)
    }

    fn shared(&self, upstream: usize) -> bool {
        self.shared_key.get(upstream).copied().unwrap_or(false)
    }

    /// How long `target` is still to be left alone, as its upstream asked.
    pub fn cooling(&self, target: &TargetRef<'_>) -> Option<Duration> {
        let model = target.model?;
        if !self.shared(target.upstream) {
            return None;
        }
        self.cooldowns
            .remaining(target.upstream, model, Instant::now())
    }

    /// Counts a target passed over.
    pub fn skipped(&self, target: &TargetRef<'_>, reason: &'static str) {
        self.metrics
            .skipped
            .with_label_values(&[
                self.upstream_name(target.upstream),
                target.model.unwrap_or(""),
                reason,
            ])
            .inc();
    }

    /// Counts a routed request's upstream call by its result (`answered`, `fell_back`,
    /// `failed`).
    pub fn attempted(&self, target: &TargetRef<'_>, result: &'static str) {
        if let Some(prepared) = target.prepared {
            let counter = match result {
                "answered" => &prepared.answered,
                "fell_back" => &prepared.fell_back,
                _ => &prepared.failed,
            };
            counter.inc();
            return;
        }
        self.metrics
            .attempts
            .with_label_values(&[
                self.upstream_name(target.upstream),
                target.model.unwrap_or(""),
                result,
            ])
            .inc();
    }

    /// Counts a fallback.
    pub fn fell_back(&self, alias: Option<&str>, failure: Failure) {
        self.metrics
            .fallbacks
            .with_label_values(&[alias.unwrap_or(""), failure.label()])
            .inc();
    }

    /// An answer's head from `target`: its `x-ratelimit-*` report becomes the headroom
    /// view (with `debit`, what this request took from it, given back), and a refusal's
    /// `retry-after` a cooldown.
    pub fn answered(
        &self,
        target: &TargetRef<'_>,
        status: u16,
        headers: &HeaderMap,
        debit: Option<Debit>,
    ) {
        let Some(model) = target.model else {
            return;
        };
        if !self.shared(target.upstream) {
            return;
        }
        let report = signals::reported(headers);
        self.headroom
            .observe(target.upstream, model, report.as_ref(), debit);
        if Self::retryable(status) {
            // Without a retry-after, a 429 whose report shows a limit used up names
            // its reset instead.
            let wait = signals::retry_after(headers).or_else(|| {
                let report = report.filter(|_| status == 429)?;
                [signals::REQUESTS, signals::TOKENS]
                    .into_iter()
                    .filter(|&d| report.remaining[d] == Some(0))
                    .filter_map(|d| report.reset[d])
                    .max()
            });
            if let Some(wait) = wait {
                self.cooldowns
                    .set(target.upstream, model, wait.min(self.max_cooldown));
                self.metrics
                    .cooldowns
                    .with_label_values(&[self.upstream_name(target.upstream)])
                    .inc();
            }
        }
    }

    /// Admission by team share while `target`'s headroom is under its reserve; waits up
    /// to `queue_timeout` when `wait`.
    pub async fn admit(
        &self,
        target: &TargetRef<'_>,
        team: &str,
        tokens: u64,
        wait: bool,
    ) -> Result<Option<Debit>, Refused> {
        let Some(model) = target.model else {
            return Ok(None);
        };
        if !self.shared(target.upstream) {
            return Ok(None);
        }
        self.headroom
            .admit(target.upstream, model, team, tokens, wait)
            .await
    }

    /// Counts a headroom refusal the client gets.
    pub fn refused(&self, target: &TargetRef<'_>, team: &str) {
        self.headroom.count_refused(target.upstream, team);
    }

    /// A team's weight in the split of headroom.
    pub fn share(&self, team: &str) -> u32 {
        self.headroom.share(team)
    }

    /// Whether the request's tokens must be counted for its headroom admission.
    pub fn needs_tokens(&self, plan: &Plan, requested: Option<&str>) -> bool {
        if !self.headroom.rationing() {
            return false;
        }
        plan.target(0, requested).is_some_and(|target| {
            self.shared(target.upstream)
                && target
                    .model
                    .is_some_and(|model| self.headroom.needs_tokens(target.upstream, model))
        })
    }

    /// Whether `target`'s headroom is under its reserve now (shadows then stay away).
    pub fn under_reserve(&self, target: &TargetRef<'_>) -> bool {
        target.model.is_some_and(|model| {
            self.shared(target.upstream) && self.headroom.under_reserve(target.upstream, model)
        })
    }

    /// The downgrade that applies to `team`'s request, if its budget is far enough
    /// gone; `allowed` says which models the caller may be served.
    pub fn downgrade(
        &self,
        team: &str,
        plan: &Plan,
        requested: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Option<Candidate> {
        if self.downgrades.is_empty() {
            return None;
        }
        self.downgrades.candidate(team, plan, requested, allowed)
    }

    /// Counts a downgrade taken.
    pub fn downgraded(&self, team: &str, from: &str, to: &str) {
        self.metrics
            .downgrades
            .with_label_values(&[team, from, to])
            .inc();
    }

    /// The candidates a request is mirrored to (usually none).
    pub fn mirrors(
        &self,
        model: Option<&str>,
        endpoint: Endpoint,
        streamed: bool,
        row_id: &str,
    ) -> Vec<Mirror> {
        self.shadows.pick(model, endpoint, streamed, row_id)
    }

    /// Whether any request can be mirrored (then the client's headers must outlive the
    /// call to the upstream, for the copy).
    pub fn mirrors_any(&self) -> bool {
        !self.shadows.is_empty()
    }

    /// A place for one shadow request, if one is free.
    pub fn shadow_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.shadow_permits).try_acquire_owned().ok()
    }

    /// The longest one shadow request may take.
    pub fn shadow_timeout(&self) -> Duration {
        self.shadow_timeout
    }

    /// Counts a shadow request by result.
    pub fn shadowed(&self, mirror: &Mirror, result: &'static str) {
        self.metrics
            .shadow
            .with_label_values(&[&mirror.model, &mirror.candidate, result])
            .inc();
    }

    /// Sends this replica's cooldowns and views to Redis and takes the others' (no-op
    /// without sharing). The sync task calls it every `routing.sync_interval`; tests
    /// call it to sync now.
    pub async fn sync_now(&self) {
        let Some(sync) = &self.sync else {
            return;
        };
        let cooldowns = sync.cooldowns(&self.cooldowns).await;
        let headroom = sync.headroom(&self.headroom).await;
        for (state, result) in [("cooldowns", cooldowns), ("headroom", headroom)] {
            match result {
                Ok(()) => {}
                Err(error) => {
                    self.metrics.sync_errors.with_label_values(&[state]).inc();
                    if !self.sync_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "cannot share routing state through redis; each replica routes on what it sees");
                    }
                    return;
                }
            }
        }
        if self.sync_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("routing state is shared through redis again");
        }
    }

    /// Starts the sync task, when sharing is on.
    pub fn spawn_sync(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        self.sync.as_ref()?;
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.sync_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.sync_now().await;
            }
        }))
    }
}
