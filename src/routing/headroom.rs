//! Organisation headroom. An upstream's limits (OpenAI's per organisation) are shared
//! by every team behind tollgate. Each answer's `x-ratelimit-*` headers give the
//! latest view per upstream and model, kept in memory (and, with sharing on, in Redis
//! for the other replicas); tollgate takes what it sends off that view until the next
//! answer corrects it.
//!
//! While a view is under its reserve, what is left is split by team weight: team `t`
//! with share `w_t` may send while its use in this window is under
//! `(used by all + remaining) · w_t / Σ w` of the teams active in the window, and
//! nothing is sent that the view says the upstream no longer has. A request over its
//! team's share waits for room (a fresher answer, another team's request ending, the
//! upstream's reset) up to `queue_timeout`, then gets a 429 before it ever reaches the
//! upstream. The window closes at the upstream's reset, when the limit is whole again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::Gauge;
use tokio::sync::Notify;

use super::metrics::RoutingMetrics;
use super::share::{Settings, State, View, Wire};
use super::signals::{KINDS, REQUESTS, Reported, TOKENS};
use crate::clock::now_ms;

/// Models tracked per process at most: views are made only from answers that carry
/// limits, but a client inventing model names must not grow memory or the scrape.
const MAX_POOLS: usize = 1024;
/// One upstream and model.
#[derive(Debug)]
pub struct Pool {
    state: Mutex<State>,
    changed: Notify,
    /// Requests waiting for room: while none is, a change wakes no one.
    waiting: AtomicUsize,
    gauges: [Gauge; 2],
}

/// Counts a request among a pool's waiters while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn show(&self, view: &View) {
        for d in [REQUESTS, TOKENS] {
            if let Some(remaining) = view.remaining[d] {
                #[expect(clippy::cast_precision_loss, reason = "a gauge, not money")]
                self.gauges[d].set(remaining as f64);
            }
        }
    }
}

/// What an admitted request took from a view; given back when its answer (or failure)
/// comes, however that happens.
#[derive(Debug)]
pub struct Debit {
    pool: Arc<Pool>,
    cost: [u64; 2],
}

impl Drop for Debit {
    fn drop(&mut self) {
        if self.cost != [0, 0] {
            self.pool.lock().answered(self.cost);
            self.pool.wake();
        }
    }
}

/// A request refused for want of headroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `requests` or `tokens`: the limit that ran out.
    pub kind: &'static str,
    pub share: u32,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct Headroom {
    settings: Settings,
    names: Vec<String>,
    pools: Vec<RwLock<HashMap<Box<str>, Arc<Pool>>>>,
    count: AtomicUsize,
    metrics: RoutingMetrics,
}

impl Headroom {
    /// `names`: the upstreams' names, by index.
    pub fn new(settings: Settings, names: Vec<String>, metrics: RoutingMetrics) -> Self {
        Self {
            pools: names.iter().map(|_| RwLock::default()).collect(),
            names,
            settings,
            count: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn rationing(&self) -> bool {
        self.settings.rationing
    }

    pub fn share(&self, team: &str) -> u32 {
        self.settings.share(team)
    }

    fn pool(&self, upstream: usize, model: &str) -> Option<Arc<Pool>> {
        let pools = self.pools.get(upstream)?;
        pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .cloned()
    }

    fn pool_or_new(&self, upstream: usize, model: &str) -> Option<Arc<Pool>> {
        if let Some(pool) = self.pool(upstream, model) {
            return Some(pool);
        }
        let pools = self.pools.get(upstream)?;
        let mut pools = pools.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(model) {
            return Some(pool.clone());
        }
        if self.count.load(Ordering::Relaxed) >= MAX_POOLS {
            return None;
        }
        let name = self.names.get(upstream).map_or("", String::as_str);
        let gauges = KINDS.map(|kind| {
            self.metrics
                .headroom
                .with_label_values(&[name, model, kind])
        });
        let pool = Arc::new(Pool {
            state: Mutex::default(),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            gauges,
        });
        pools.insert(Box::from(model), pool.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        Some(pool)
    }

    /// Whether a request to `model` at `upstream` needs its tokens counted: the
    /// upstream reports tokens left for it, and they are under (or within twice) the
    /// reserve. Far from it, a request's tokens change nothing and are not counted.
    pub fn needs_tokens(&self, upstream: usize, model: &str) -> bool {
        if !self.settings.rationing {
            return false;
        }
        let Some(pool) = self.pool(upstream, model) else {
            return false;
        };
        let state = pool.lock();
        match (
            state.view.remaining[TOKENS],
            state.reserve(&self.settings, TOKENS),
        ) {
            (Some(remaining), Some(reserve)) => remaining < reserve.saturating_mul(2),
            _ => false,
        }
    }

    /// Whether the view of `model` at `upstream` is under its reserve now.
    pub fn under_reserve(&self, upstream: usize, model: &str) -> bool {
        if !self.settings.rationing {
            return false;
        }
        let Some(pool) = self.pool(upstream, model) else {
            return false;
        };
        let mut state = pool.lock();
        state.refresh(Instant::now());
        state.constrained(&self.settings) != [false, false]
    }

    /// Admits one request of `tokens` for `team`, waiting up to `queue_timeout` when
    /// `wait` (the first target of a request; fallbacks are passed over instead).
    pub async fn admit(
        &self,
        upstream: usize,
        model: &str,
        team: &str,
        tokens: u64,
        wait: bool,
    ) -> Result<Option<Debit>, Refused> {
        if !self.settings.rationing {
            return Ok(None);
        }
        let Some(pool) = self.pool(upstream, model) else {
            return Ok(None);
        };
        let cost = [1, tokens];
        let started = Instant::now();
        let deadline = started + self.settings.queue_timeout;
        let name = self.names.get(upstream).map_or("", String::as_str);
        let mut queued: Option<Waiting<'_>> = None;
        loop {
            let changed = pool.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let verdict = pool.lock().try_admit(&self.settings, team, cost, now);
            let blocked = match verdict {
                Ok(rationed) => {
                    if queued.is_some() {
                        self.metrics
                            .queue_wait
                            .with_label_values(&[name])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    if rationed {
                        self.metrics.rationed.with_label_values(&[name, team]).inc();
                    }
                    return Ok(Some(Debit {
                        pool: Arc::clone(&pool),
                        cost,
                    }));
                }
                Err(blocked) => blocked,
            };
            if !wait || now >= deadline {
                if queued.is_some() {
                    self.metrics
                        .queue_wait
                        .with_label_values(&[name])
                        .observe(started.elapsed().as_secs_f64());
                }
                let left = blocked.until.saturating_duration_since(now);
                return Err(Refused {
                    kind: KINDS[blocked.kind],
                    share: self.settings.share(team),
                    retry_after: left.max(Duration::from_secs(1)),
                });
            }
            if queued.is_none() {
                // Counted among the waiters before looking again, so no change made
                // after that look can pass without waking this request.
                pool.waiting.fetch_add(1, Ordering::SeqCst);
                queued = Some(Waiting(&pool.waiting));
                self.metrics.queued.with_label_values(&[name, team]).inc();
                continue;
            }
            let wake = blocked
                .until
                .min(deadline)
                .max(now + Duration::from_millis(1));
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Counts a refusal the client gets (a fallback passed over is not one).
    pub fn count_refused(&self, upstream: usize, team: &str) {
        let name = self.names.get(upstream).map_or("", String::as_str);
        self.metrics.refused.with_label_values(&[name, team]).inc();
    }

    /// An answer from `model` at `upstream`: its report (if any) becomes the view, less
    /// what is still in flight from here; `debit` is this request's own.
    pub fn observe(
        &self,
        upstream: usize,
        model: &str,
        reported: Option<&Reported>,
        debit: Option<Debit>,
    ) {
        let Some(reported) = reported else {
            drop(debit);
            return;
        };
        let pool = match &debit {
            Some(debit) => Some(debit.pool.clone()),
            None => self.pool_or_new(upstream, model),
        };
        let Some(pool) = pool else {
            return;
        };
        let mut state = pool.lock();
        if let Some(mut debit) = debit {
            state.answered(debit.cost);
            debit.cost = [0, 0];
        }
        state.observe(reported, Instant::now(), now_ms());
        pool.show(&state.view);
        drop(state);
        pool.wake();
    }

    /// Views changed here since last taken, for Redis.
    pub fn take_dirty(&self) -> Vec<(usize, String, Wire)> {
        let mut out = Vec::new();
        for (upstream, pools) in self.pools.iter().enumerate() {
            let pools = pools.read().unwrap_or_else(PoisonError::into_inner);
            for (model, pool) in pools.iter() {
                let mut state = pool.lock();
                if state.dirty {
                    state.dirty = false;
                    out.push((upstream, model.to_string(), state.wire()));
                }
            }
        }
        out
    }

    /// Another replica's view, taken if newer than this one's.
    pub fn merge(&self, upstream: usize, model: &str, wire: &Wire) {
        if wire.expires_ms() <= now_ms() {
            return;
        }
        let Some(pool) = self.pool_or_new(upstream, model) else {
            return;
        };
        let mut state = pool.lock();
        if state.merge(wire, Instant::now(), now_ms()) {
            pool.show(&state.view);
            drop(state);
            pool.wake();
        }
    }
}
